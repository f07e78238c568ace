/**
 * The life of a TCP server, done once so every example gets it right:
 * listen with a clear error, print `listening on HOST:PORT`, keep one bad
 * client from hurting the others, cap the number of clients, and on Ctrl+C or
 * SIGTERM stop accepting, let replies in flight finish, close every
 * connection and exit 0 within 2 seconds.
 *
 * @example A server that greets each client and hangs up
 * ```ts
 * import { listen, TcpServer } from "./server.ts";
 * import { writeAll } from "./io.ts";
 *
 * const server = new TcpServer(listen("127.0.0.1", 0), { name: "greeter" });
 * const client = Deno.connect({ port: server.listener.addr.port });
 * for await (const conn of server.accept()) {
 *   await server.handle(conn, async () => {
 *     await writeAll(conn, new TextEncoder().encode("hi\n"));
 *   });
 *   break;
 * }
 * (await client).close();
 * await server.shutdown();
 * ```
 *
 * @module
 */

import { CliError, paint } from "./cli.ts";
import { ReadTimeoutError, secondsToMs, writeAll } from "./io.ts";
import { LineTooLongError, type ServeLinesOptions } from "./lines.ts";

/** How long shutdown waits for replies in flight before closing connections. */
const DRAIN_MS = 1500;

/**
 * Formats an address as `HOST:PORT`, with IPv6 hosts in brackets.
 *
 * @example
 * ```ts
 * import { formatAddress } from "./server.ts";
 * console.log(formatAddress({ transport: "tcp", hostname: "::1", port: 80 })); // [::1]:80
 * ```
 */
export function formatAddress(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return String(addr.transport);
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `${host}:${addr.port}`;
}

/**
 * `Deno.listen` with errors a person can act on. ({@linkcode TcpServer}
 * prints `listening on HOST:PORT` once it can also handle Ctrl+C.)
 *
 * @throws {CliError} naming the address when the port is taken, the address
 *   is not local, or `--allow-net` is missing.
 *
 * @example
 * ```ts
 * import { listen } from "./server.ts";
 * const listener = listen("127.0.0.1", 0);
 * console.log(listener.addr.port > 0); // true
 * listener.close();
 * ```
 */
export function listen(hostname: string, port: number): Deno.TcpListener {
  const where = hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname, port });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      throw new CliError(
        `port ${port} is already in use on ${hostname}: stop the other server, or pick another --port (--port 0 takes a free one)`,
      );
    }
    if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
      throw new CliError(
        `no permission to listen on ${where}: run with --allow-net=${
          hostname.includes(":") ? `[${hostname}]` : hostname
        }`,
      );
    }
    if (err instanceof Deno.errors.AddrNotAvailable) {
      throw new CliError(
        `cannot listen on ${where}: ${hostname} is not an address of this machine`,
      );
    }
    throw new CliError(`cannot listen on ${where}: ${(err as Error).message}`);
  }
  return listener;
}

/** Two signals closer together than this are one Ctrl+C, delivered twice. */
const SAME_SIGNAL_MS = 300;

/**
 * Calls `stop` on the first SIGINT or SIGTERM, and exits at once (code 0) on
 * a second one a moment later: a second Ctrl+C means "now". Signals that
 * arrive together count as one: under `deno task`, one Ctrl+C reaches the
 * script twice (the terminal sends it to the whole process group, and the
 * task runner forwards its own copy). Returns a function that removes the
 * listeners.
 *
 * @example
 * ```ts
 * import { onStopSignal } from "./server.ts";
 * const remove = onStopSignal(() => console.log("stopping"));
 * remove();
 * ```
 */
export function onStopSignal(stop: () => void): () => void {
  let first: number | undefined;
  const onSignal = () => {
    const now = performance.now();
    if (first === undefined) {
      first = now;
      stop();
    } else if (now - first > SAME_SIGNAL_MS) {
      Deno.exit(0);
    }
  };
  // Windows has no SIGTERM.
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  return () => {
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  };
}

/**
 * Counts clients against a limit. {@linkcode TcpServer} counts its own by
 * default; a pool of workers passes one counter they share, so that
 * `--max-conns` caps the whole server.
 */
export interface ConnectionCap {
  /** Counts one more client, or returns false when the limit is reached. */
  tryTake(): boolean;
  /** A counted client has left. */
  give(): void;
}

/** A {@linkcode ConnectionCap} for one thread. */
function localCap(max: number): ConnectionCap {
  let taken = 0;
  return {
    tryTake: () => taken < max ? (taken++, true) : false,
    give: () => void taken--,
  };
}

/**
 * Accept errors that mean only "that client left before we took it": it
 * reset while in the backlog. Not the server's fault; accept the next at once.
 */
const CLIENT_GONE = new Set(["ENOTCONN", "ECONNABORTED", "ECONNRESET", "EPROTO"]);
/** The longest pause after accept() fails for lack of file descriptors or memory. */
const MAX_ACCEPT_PAUSE_MS = 1000;

/** Options for {@linkcode TcpServer}. */
export interface TcpServerOptions {
  /** Printed in the last line at shutdown. */
  name: string;
  /** Clients served at once; the next get `ERR server busy` and are closed. */
  maxConns?: number | ConnectionCap;
  /**
   * Install SIGINT/SIGTERM handlers that shut down and exit 0, then print
   * `listening on HOST:PORT`: the line means "ready, Ctrl+C included".
   * Default true.
   */
  handleSignals?: boolean;
  /** Log lines for connects, disconnects and errors (default `console.log`). */
  log?: (line: string) => void;
}

/**
 * Accepts connections, runs a handler for each with its errors contained, and
 * shuts down cleanly.
 *
 * @example
 * ```ts
 * import { listen, TcpServer } from "./server.ts";
 * const server = new TcpServer(listen("127.0.0.1", 0), { name: "demo", handleSignals: false });
 * console.log(server.connections); // 0
 * await server.shutdown();
 * ```
 */
export class TcpServer {
  /** The listening socket. */
  readonly listener: Deno.TcpListener;
  readonly #options: TcpServerOptions;
  readonly #stopping = new AbortController();
  readonly #conns = new Set<Deno.Conn>();
  readonly #counted = new Set<Deno.Conn>(); // the ones that took a place under maxConns
  readonly #tasks = new Set<Promise<void>>();
  readonly #log: (line: string) => void;
  readonly #cap: ConnectionCap | undefined;
  readonly #removeSignals: (() => void) | undefined;
  #acceptFailures = 0; // since the last report
  #lastAcceptReport = -Infinity;
  #failureReported = false; // and no "accepting again" since

  /**
   * Serves on `listener` (see {@linkcode listen}); with `handleSignals`
   * (the default) prints `listening on HOST:PORT` once Ctrl+C is handled.
   */
  constructor(listener: Deno.TcpListener, options: TcpServerOptions) {
    this.listener = listener;
    this.#options = options;
    this.#log = options.log ?? ((line) => console.log(line));
    const max = options.maxConns;
    this.#cap = typeof max === "number" ? localCap(max) : max;
    if (options.handleSignals ?? true) {
      this.#removeSignals = onStopSignal(() => this.shutdown().then(() => Deno.exit(0)));
      console.log(`listening on ${formatAddress(listener.addr)}`);
    }
  }

  /**
   * Aborts when shutdown begins. Pass it to readers (`signal` option) so that
   * a handler waiting for the next line stops waiting and returns.
   */
  get signal(): AbortSignal {
    return this.#stopping.signal;
  }

  /** Connections being served now. */
  get connections(): number {
    return this.#conns.size;
  }

  /**
   * Yields accepted connections until shutdown; pass each to
   * {@linkcode TcpServer.handle}. Above `maxConns`, a client is told
   * `ERR server busy` and closed here.
   *
   * A failed `accept()` is not fatal. When the client reset while still in
   * the backlog, the next one is accepted at once. When the process is out of
   * file descriptors or memory, it pauses (5 ms, doubling up to 1 s) for
   * clients to leave, and logs that at most once a second.
   */
  async *accept(): AsyncGenerator<Deno.TcpConn> {
    let pauseMs = 0;
    while (!this.signal.aborted) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch (err) {
        if (this.signal.aborted || err instanceof Deno.errors.BadResource) return;
        if (CLIENT_GONE.has((err as { code?: string }).code ?? "")) continue;
        pauseMs = Math.min(Math.max(pauseMs * 2, 5), MAX_ACCEPT_PAUSE_MS);
        this.#acceptFailed(err as Error, pauseMs);
        await new Promise((resolve) => setTimeout(resolve, pauseMs));
        continue;
      }
      if (pauseMs > 0) this.#acceptRecovered();
      pauseMs = 0;
      if (this.signal.aborted) {
        conn.close();
        return;
      }
      if (this.#cap !== undefined) {
        if (!this.#cap.tryTake()) {
          this.#turnAway(conn);
          continue;
        }
        this.#counted.add(conn);
      }
      yield conn;
    }
  }

  #acceptFailed(err: Error, pauseMs: number): void {
    this.#acceptFailures++;
    const now = performance.now();
    if (now - this.#lastAcceptReport < 1000) return;
    this.#log(
      `accept failed ${this.#acceptFailures} time(s): ${err.message}; ` +
        `pausing ${pauseMs} ms for clients to leave`,
    );
    this.#acceptFailures = 0;
    this.#lastAcceptReport = now;
    this.#failureReported = true;
  }

  #acceptRecovered(): void {
    // The clock is not reset: at its limit a server flaps (a client leaves, the
    // next is accepted, the one after fails), and must not log each flap.
    if (!this.#failureReported) return; // the next report counts the failures since
    this.#log("accepting again");
    this.#failureReported = false;
  }

  /**
   * Runs `serve(conn, peer)` and always closes `conn` afterwards. Its errors
   * are logged in one line and go no further, so one client's reset or
   * garbage cannot stop the server. The returned promise never rejects: await
   * it to serve one client at a time, or don't, to serve many at once.
   */
  handle(conn: Deno.Conn, serve: (conn: Deno.Conn, peer: string) => Promise<void>): Promise<void> {
    const peer = formatAddress(conn.remoteAddr);
    this.#conns.add(conn);
    // A promise chain rather than an async function: an idle connection waits
    // inside `serve`, and each suspended async frame would cost it ~1 KiB.
    // (The fewer promises and closures per connection, the more fit in memory.)
    let served: Promise<void>;
    try {
      served = serve(conn, peer);
    } catch (err) {
      served = Promise.reject(err);
    }
    const task: Promise<void> = served.then(undefined, (err) => {
      if (!this.signal.aborted) this.#log(`${peer}: ${explainClientError(err)}`);
    }).then(() => {
      this.#conns.delete(conn);
      if (this.#counted.delete(conn)) this.#cap!.give();
      this.#tasks.delete(task);
      closeQuietly(conn);
    });
    this.#tasks.add(task);
    return task;
  }

  /**
   * Closes the listener but lets the clients already connected finish on
   * their own; resolves when the last one is done. (Used to retire a worker
   * whose successor already listens on the same port.)
   */
  async stopAccepting(): Promise<void> {
    closeQuietly(this.listener);
    while (this.#tasks.size > 0) await Promise.all(this.#tasks);
  }

  /**
   * Stops accepting, gives handlers up to 1.5 s to finish the replies they
   * owe, closes every connection still open, and prints a last line.
   */
  async shutdown(): Promise<void> {
    if (this.#stopping.signal.aborted) return;
    this.#stopping.abort();
    closeQuietly(this.listener);
    const open = this.#conns.size;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(this.#tasks),
      new Promise((resolve) => timer = setTimeout(resolve, DRAIN_MS)),
    ]);
    clearTimeout(timer);
    for (const conn of this.#conns) closeQuietly(conn);
    await Promise.all(this.#tasks);
    this.#removeSignals?.();
    this.#log(paint("dim", `${this.#options.name}: shut down, ${plural(open, "client")} closed`));
  }

  #turnAway(conn: Deno.Conn): void {
    this.#log(`${formatAddress(conn.remoteAddr)}: turned away, server full (--max-conns)`);
    // Not awaited: a client that never reads must not stall the accept loop.
    writeAll(conn, BUSY).catch(() => {}).finally(() => closeQuietly(conn));
  }
}

const BUSY = new TextEncoder().encode("ERR server busy\n");

/**
 * The limits a line server puts on each client, from its `--max-line` and
 * `--idle-timeout` flags (0 means no timeout), plus the shutdown signal so
 * that a client waiting for its next line is let go on Ctrl+C.
 *
 * @example
 * ```ts
 * import { lineLimits } from "./server.ts";
 * const limits = lineLimits({ "max-line": 1024, "idle-timeout": 30 }, new AbortController().signal);
 * console.log(limits.maxLine, limits.idleTimeoutMs); // 1024 30000
 * ```
 */
export function lineLimits(
  flags: { "max-line": number; "idle-timeout": number },
  signal: AbortSignal,
): ServeLinesOptions {
  return { maxLine: flags["max-line"], idleTimeoutMs: secondsToMs(flags["idle-timeout"]), signal };
}

/** `1 client`, `2 clients`. */
function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/**
 * Says in a few words why a client's connection ended badly.
 *
 * @example
 * ```ts
 * import { explainClientError } from "./server.ts";
 * console.log(explainClientError(new Deno.errors.ConnectionReset("reset"))); // connection reset by client
 * ```
 */
export function explainClientError(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionReset) return "connection reset by client";
  if (err instanceof Deno.errors.BrokenPipe) return "client went away before the reply was sent";
  if (err instanceof ReadTimeoutError) return `idle for ${err.timeoutMs / 1000} s, disconnected`;
  if (err instanceof Deno.errors.Interrupted) return "connection closed";
  if (err instanceof LineTooLongError) return `sent a ${err.message}, disconnected`;
  return (err instanceof Error ? err.message : String(err)).split("\n")[0];
}

/**
 * Closes a connection or listener that may already be closed.
 *
 * @example
 * ```ts
 * import { closeQuietly } from "./server.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * closeQuietly(listener);
 * closeQuietly(listener); // no error the second time
 * ```
 */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}
