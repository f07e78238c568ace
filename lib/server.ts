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
import { writeAll } from "./io.ts";
import { type LineReaderOptions, LineTooLongError } from "./lines.ts";
import { ReadTimeoutError } from "./io.ts";

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
 * `Deno.listen` with errors a person can act on, then prints
 * `listening on HOST:PORT` with the port really bound (useful with port 0).
 *
 * @throws {CliError} naming the address when the port is taken, the address
 *   is not local, or `--allow-net` is missing.
 *
 * @example
 * ```ts
 * import { listen } from "./server.ts";
 * const listener = listen("127.0.0.1", 0); // prints "listening on 127.0.0.1:PORT"
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
  console.log(`listening on ${formatAddress(listener.addr)}`);
  return listener;
}

/** Options for {@linkcode TcpServer}. */
export interface TcpServerOptions {
  /** Printed in the last line at shutdown. */
  name: string;
  /** Clients served at once; the next get `ERR server busy` and are closed. */
  maxConns?: number;
  /** Install SIGINT/SIGTERM handlers that shut down and exit 0. Default true. */
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
  readonly #tasks = new Set<Promise<void>>();
  readonly #log: (line: string) => void;
  #onSignal = () => {
    // A second Ctrl+C means "now".
    if (this.#stopping.signal.aborted) Deno.exit(0);
    this.shutdown().then(() => Deno.exit(0));
  };

  /** Serves on `listener` (see {@linkcode listen}). */
  constructor(listener: Deno.TcpListener, options: TcpServerOptions) {
    this.listener = listener;
    this.#options = options;
    this.#log = options.log ?? ((line) => console.log(line));
    if (options.handleSignals ?? true) {
      Deno.addSignalListener("SIGINT", this.#onSignal);
      // Windows has no SIGTERM.
      if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", this.#onSignal);
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
   * Yields accepted connections until shutdown. A failed `accept()` (such as
   * running out of file descriptors) is logged and retried, not fatal. Above
   * `maxConns`, a client is told `ERR server busy` and closed here.
   */
  async *accept(): AsyncGenerator<Deno.TcpConn> {
    while (!this.signal.aborted) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch (err) {
        if (this.signal.aborted || err instanceof Deno.errors.BadResource) return;
        this.#log(`accept failed: ${(err as Error).message}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (this.signal.aborted) {
        conn.close();
        return;
      }
      const max = this.#options.maxConns;
      if (max !== undefined && this.#conns.size >= max) {
        this.#turnAway(conn);
        continue;
      }
      yield conn;
    }
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
    if (this.#options.handleSignals ?? true) {
      Deno.removeSignalListener("SIGINT", this.#onSignal);
      if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGTERM", this.#onSignal);
    }
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
    this.#log(paint("dim", `${this.#options.name}: shut down, ${open} client(s) closed`));
  }

  #turnAway(conn: Deno.Conn): void {
    this.#log(
      `${formatAddress(conn.remoteAddr)}: turned away, ${this.#conns.size} clients already`,
    );
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
 * console.log(limits.maxLine, limits.timeoutMs); // 1024 30000
 * ```
 */
export function lineLimits(
  flags: { "max-line": number; "idle-timeout": number },
  signal: AbortSignal,
): LineReaderOptions {
  const idle = flags["idle-timeout"];
  return { maxLine: flags["max-line"], timeoutMs: idle > 0 ? idle * 1000 : undefined, signal };
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
