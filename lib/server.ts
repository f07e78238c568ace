/**
 * The life of a TCP server, done once so every example gets it right:
 * listen with a clear error, print `listening on HOST:PORT`, keep one bad
 * client from hurting the others, cap the number of clients, and on Ctrl+C,
 * SIGTERM or SIGHUP stop accepting, let replies in flight finish, close every
 * connection and exit 0 within 2 seconds.
 *
 * @example A server that greets each client and hangs up
 * ```ts
 * import { listen, TcpServer } from "./server.ts";
 * import { writeAll } from "./io.ts";
 * import { flushLogs } from "./log.ts";
 *
 * const server = new TcpServer(await listen("127.0.0.1", 0), { name: "greeter" });
 * const client = Deno.connect({ port: server.listener.addr.port });
 * for await (const conn of server.accept()) {
 *   await server.handle(conn, async () => {
 *     await writeAll(conn, new TextEncoder().encode("hi\n"));
 *   });
 *   break;
 * }
 * (await client).close();
 * await server.shutdown();
 * await flushLogs(); // its log lines go out in the background
 * ```
 *
 * @module
 */

import { AcceptFailures } from "./accept.ts";
import { IdleClock } from "./deadline.ts";
import {
  explainClientError,
  listenErrorText,
  plural,
  ReadTimeoutError,
  SERVER_BUSY,
} from "./errors.ts";
import { closeQuietly, writeAll } from "./io.ts";
import { flushLogs, log } from "./log.ts";
import { onStopSignal } from "./signals.ts";
import { formatAddress, paint } from "./text.ts";

/** How long shutdown waits for replies in flight before closing connections. */
const DRAIN_MS = 1200;
/** From Ctrl+C to exit, at most (the rest of it goes to the log's last lines). */
const STOP_MS = 1800;

/**
 * `Deno.listen` with errors a person can act on. ({@linkcode TcpServer}
 * prints `listening on HOST:PORT` once it can also handle Ctrl+C.) A port
 * "in use" may be held by a server, or only by a connection still closing
 * (TIME-WAIT); a connect to it tells which, and the error says so.
 *
 * @throws {Error} naming the address when the port is taken, the address
 *   is not local, or `--allow-net` is missing.
 *
 * @example
 * ```ts
 * import { listen } from "./server.ts";
 * const listener = await listen("127.0.0.1", 0);
 * console.log(listener.addr.port > 0); // true
 * listener.close();
 * ```
 */
export async function listen(hostname: string, port: number): Promise<Deno.TcpListener> {
  try {
    return Deno.listen({ hostname, port });
  } catch (err) {
    const accepted = err instanceof Deno.errors.AddrInUse
      ? await accepts(hostname, port)
      : undefined;
    throw new Error(listenErrorText(err, hostname, port, accepted), { cause: err });
  }
}

/** Whether a server accepts on `hostname:port`: refused is false; can't tell is undefined. */
async function accepts(hostname: string, port: number): Promise<boolean | undefined> {
  const host = hostname === "0.0.0.0" ? "127.0.0.1" : hostname === "::" ? "::1" : hostname;
  try {
    (await Deno.connect({ hostname: host, port, signal: AbortSignal.timeout(1000) })).close();
    return true;
  } catch (err) {
    return err instanceof Deno.errors.ConnectionRefused ? false : undefined; // no answer: full?
  }
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

/** What {@linkcode TcpServer.handle} gives each conversation besides its connection. */
export interface ClientContext {
  /** The client's address, `HOST:PORT` (`[::1]:PORT` for IPv6). */
  peer: string;
  /** Aborts when the server shuts down. Pass it to a `LineReader`. */
  signal: StopSignal;
  /** With `idleTimeoutMs`: closes the connection unless restarted in time. */
  idle: IdleClock | undefined;
}

/**
 * A client's stop signal. Not an `AbortSignal`: one with a listener costs an
 * idle connection some 770 bytes, a tenth of all it costs; this costs a few.
 */
/**
 * What aborts when a server shuts down, as a `LineReader`'s `signal` takes
 * it (lines.ts): whether it has, and a listener called once when it does.
 */
export interface StopSignal {
  /** True once it has aborted. */
  readonly aborted: boolean;
  /** Calls `listener` when it aborts. */
  addEventListener(type: "abort", listener: () => void, options: { once: true }): void;
}

class ClientStop implements StopSignal {
  aborted = false;
  #listeners: (() => void)[] = [];
  addEventListener(_type: "abort", listener: () => void): void {
    this.#listeners.push(listener);
  }
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    for (const listener of this.#listeners) listener();
  }
}

/** Options for {@linkcode TcpServer}. */
export interface TcpServerOptions {
  /** Printed in the last line at shutdown. */
  name: string;
  /** Clients served at once; the next get `ERR server busy` and are closed. */
  maxConns?: number | ConnectionCap;
  /**
   * Install SIGINT/SIGTERM/SIGHUP handlers (`onStopSignal`) that shut down
   * and exit 0, then print `listening on HOST:PORT`: the line means "ready,
   * Ctrl+C included". Default true.
   */
  handleSignals?: boolean;
  /**
   * Close a client that makes no progress for this long (see
   * {@linkcode TcpServer.handle}). Unset: never.
   */
  idleTimeoutMs?: number;
  /**
   * Log lines for connects, disconnects and errors (default `log` of
   * log.ts: stdout, never waiting for whoever reads it).
   */
  log?: (line: string) => void;
}

/**
 * Accepts connections, runs a handler for each with its errors contained, and
 * shuts down cleanly (see the module's example).
 */
export class TcpServer {
  /** The listening socket. */
  readonly listener: Deno.TcpListener;
  readonly #options: TcpServerOptions;
  readonly #stopping = new AbortController();
  readonly #conns = new Map<Deno.Conn, ClientStop>(); // each client's stop signal
  readonly #counted = new Set<Deno.Conn>(); // the ones that took a place under maxConns
  readonly #tasks = new Set<Promise<void>>();
  readonly #log: (line: string) => void;
  readonly #cap: ConnectionCap | undefined;
  readonly #removeSignals: (() => void) | undefined;
  #shutdown: Promise<void> | undefined;

  /**
   * Serves on `listener` (see {@linkcode listen}); with `handleSignals`
   * (the default) prints `listening on HOST:PORT` once Ctrl+C is handled.
   */
  constructor(listener: Deno.TcpListener, options: TcpServerOptions) {
    this.listener = listener;
    this.#options = options;
    this.#log = options.log ?? log;
    const max = options.maxConns;
    this.#cap = typeof max === "number" ? localCap(max) : max;
    if (options.handleSignals ?? true) {
      this.#removeSignals = onStopSignal(async () => {
        const exitBy = performance.now() + STOP_MS;
        await this.shutdown();
        await flushLogs(exitBy - performance.now()); // the last lines, unless nobody reads them
        Deno.exit(0);
      }, {
        name: options.name,
        connections: () => this.connections, // cut off by a second Ctrl+C
      });
      // Written at once, unlike the log lines after it (a new pipe has room
      // for a line). Written in the background, with the write still in
      // flight as the first clients came, it kept V8 from giving an idle
      // server's memory back later (measured: 11 instead of 7 KiB per idle
      // client, deno task bench).
      console.log(`listening on ${formatAddress(listener.addr)}`);
    }
  }

  /**
   * Aborts when shutdown begins. (Each client's reader takes the `signal`
   * that {@linkcode TcpServer.handle} gives it instead: one of its own.)
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
    const failures = new AcceptFailures(this.#log);
    while (!this.signal.aborted) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.listener.accept();
      } catch (err) {
        if (this.signal.aborted || err instanceof Deno.errors.BadResource) return;
        await failures.pauseAfter(err); // at once, or after a pause
        continue;
      }
      failures.recovered();
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

  /**
   * Runs `serve(client)` for one accepted connection and always closes it
   * afterwards. `client` carries what the conversation needs besides the
   * connection: `peer` (`HOST:PORT`), `signal` (aborts at shutdown: pass it
   * to the reader, so that a client waiting for its next line is let go) and,
   * with `idleTimeoutMs`, `idle`: a running {@linkcode IdleClock} that closes
   * the connection when it runs out. Restart it when the client makes
   * progress; pass it to `writeAll`.
   *
   * Errors are logged in one line and go no further, so one client's reset
   * or garbage cannot stop the server. The returned promise never rejects:
   * await it to serve one client at a time, or don't, to serve many at once.
   */
  handle(conn: Deno.Conn, serve: (client: ClientContext) => Promise<void>): Promise<void> {
    const peer = formatAddress(conn.remoteAddr);
    const stop = new ClientStop();
    this.#conns.set(conn, stop);
    const timeoutMs = this.#options.idleTimeoutMs;
    const idle = timeoutMs === undefined ? undefined : new IdleClock(timeoutMs, () => conn.close());
    idle?.restart();
    // A promise chain rather than an async function: an idle connection waits
    // inside `serve`, and each suspended async frame would cost it memory.
    let served: Promise<void>;
    try {
      served = serve({ peer, idle, signal: stop });
    } catch (err) {
      served = Promise.reject(err);
    }
    const task: Promise<void> = served.then(undefined, (err) => {
      // The clock closed the connection under a read or a write: say why.
      if (idle?.expired) err = new ReadTimeoutError(idle.timeoutMs);
      if (!this.signal.aborted) this.#log(`${peer}: ${explainClientError(err)}`);
    }).then(() => {
      idle?.stop();
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
   * Stops accepting, gives handlers up to 1.2 s to finish the replies they
   * owe, closes every connection still open, and prints a last line.
   */
  shutdown(): Promise<void> {
    // A second call (Ctrl+C while the script shuts down itself) waits for the first.
    return this.#shutdown ??= this.#stop();
  }

  async #stop(): Promise<void> {
    this.#stopping.abort();
    closeQuietly(this.listener);
    for (const stop of this.#conns.values()) stop.abort();
    const open = this.#conns.size;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(this.#tasks),
      new Promise((resolve) => timer = setTimeout(resolve, DRAIN_MS)),
    ]);
    clearTimeout(timer);
    for (const conn of this.#conns.keys()) closeQuietly(conn);
    await Promise.all(this.#tasks);
    this.#removeSignals?.();
    const cut = open === 0 ? "" : `, and closed the ${plural(open, "client")} still connected`;
    this.#log(paint("dim", `${this.#options.name}: shut down${cut}`));
  }

  #turnAway(conn: Deno.Conn): void {
    this.#log(`${formatAddress(conn.remoteAddr)}: turned away, server full (--max-conns)`);
    // Not awaited: a client that never reads must not stall the accept loop.
    writeAll(conn, SERVER_BUSY).catch(() => {}).finally(() => closeQuietly(conn));
  }
}

// ---------------------------------------------------------------------------
// The card's shape: the script calls Deno.listen, accepts in its own loop and
// serves each client in its own function; these are the pieces it calls by
// name to be robust. (TcpServer above is the older shape, for the scripts
// not yet moved to this one.)

/**
 * Why `Deno.listen({ hostname, port })` threw `err`, as an error to throw:
 * it names the address, and for a port in use it tries a connect to tell a
 * server from a connection still closing (TIME-WAIT).
 *
 * @example
 * ```ts
 * import { whyCannotListen } from "./server.ts";
 * const first = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * try {
 *   Deno.listen({ hostname: "127.0.0.1", port: first.addr.port });
 * } catch (err) {
 *   console.log((await whyCannotListen(err, "127.0.0.1", first.addr.port)).message);
 *   // port NNNN is already in use on 127.0.0.1: ...
 * }
 * first.close();
 * ```
 */
export async function whyCannotListen(
  err: unknown,
  hostname: string,
  port: number,
): Promise<Error> {
  const accepted = err instanceof Deno.errors.AddrInUse ? await accepts(hostname, port) : undefined;
  return new Error(listenErrorText(err, hostname, port, accepted), { cause: err });
}

/**
 * After `listener.accept()` threw `err`: resolves to true when the server
 * should accept again, false when the listener was closed (Ctrl+C). A client
 * that reset while it waited in the backlog costs nothing: accept again at
 * once. Out of file descriptors or memory: pause (5 ms, doubling up to 1 s)
 * for clients to leave, and say so at most once a second.
 *
 * @example
 * ```ts
 * import { acceptAgain } from "./server.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * listener.close();
 * try {
 *   await listener.accept();
 * } catch (err) {
 *   console.log(await acceptAgain(err)); // false: the listener is closed
 * }
 * ```
 */
export async function acceptAgain(err: unknown): Promise<boolean> {
  if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
    return false;
  }
  await (acceptFailures ??= new AcceptFailures(log)).pauseAfter(err);
  return true;
}
let acceptFailures: AcceptFailures | undefined;

/**
 * The clients a server has open: what its Ctrl+C lets finish, then closes,
 * and what `--max-conns` counts.
 *
 * @example
 * ```ts
 * import { OpenClients } from "./server.ts";
 * const clients = new OpenClients();
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * const conn = await listener.accept();
 * const stop = clients.add(conn); // aborts at shutdown: pass it to a LineReader
 * console.log(clients.size, stop.aborted); // 1 false
 * clients.close(conn); // closes it, and it is no longer counted
 * console.log(clients.size); // 0
 * client.close();
 * listener.close();
 * ```
 */
export class OpenClients {
  readonly #stops = new Map<Deno.Conn, ClientStop>();
  #allGone: (() => void) | undefined;

  /** How many clients are open. */
  get size(): number {
    return this.#stops.size;
  }

  /** Counts `conn` in; the signal returned aborts when the server shuts down. */
  add(conn: Deno.Conn): StopSignal {
    acceptFailures?.recovered(); // accept() works: if it had been failing, say so once
    const stop = new ClientStop();
    this.#stops.set(conn, stop);
    return stop;
  }

  /** Closes `conn` (whatever state it is in) and counts it out. */
  close(conn: Deno.Conn): void {
    closeQuietly(conn);
    this.#stops.delete(conn);
    if (this.#stops.size === 0) this.#allGone?.();
  }

  /**
   * Shutdown: aborts every client's signal (a reader waiting for a line
   * gets `null`), gives them up to 1.2 s to finish the replies they owe,
   * then closes the ones still open. Resolves to how many were open.
   */
  async closeAll(): Promise<number> {
    const open = this.#stops.size;
    for (const stop of this.#stops.values()) stop.abort();
    if (this.#stops.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#allGone = resolve;
        timer = setTimeout(resolve, DRAIN_MS);
      });
      clearTimeout(timer);
    }
    for (const conn of [...this.#stops.keys()]) this.close(conn);
    return open;
  }
}

/**
 * On Ctrl+C, SIGTERM or SIGHUP: close `listener` (the accept loop ends),
 * let `clients` finish (see {@linkcode OpenClients.closeAll}), print
 * `NAME: shut down`, and exit 0 within 2 s. A second Ctrl+C, later than the
 * same key press can arrive twice, exits at once. Call it before printing
 * `listening on`: that line promises Ctrl+C is handled.
 *
 * @example
 * ```ts ignore
 * import { OpenClients, stopOnSignal } from "./server.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const clients = new OpenClients();
 * stopOnSignal("my_server", listener, clients);
 * console.log(`listening on 127.0.0.1:${listener.addr.port}`);
 * ```
 */
export function stopOnSignal(name: string, listener: Deno.Listener, clients: OpenClients): void {
  onStopSignal(async () => {
    const exitBy = performance.now() + STOP_MS;
    closeQuietly(listener);
    const open = await clients.closeAll();
    const cut = open === 0 ? "" : `, and closed the ${plural(open, "client")} still connected`;
    log(paint("dim", `${name}: shut down${cut}`));
    await flushLogs(exitBy - performance.now()); // the last lines, unless nobody reads them
    Deno.exit(0);
  }, { name, connections: () => clients.size });
}

/** A client over `--max-conns`: `ERR server busy`, then close, without waiting for it. */
export function turnAway(conn: Deno.Conn): void {
  acceptFailures?.recovered();
  log(`${formatAddress(conn.remoteAddr)}: turned away, server full (--max-conns)`);
  writeAll(conn, SERVER_BUSY).catch(() => {}).finally(() => closeQuietly(conn));
}

/**
 * A running {@linkcode IdleClock} that closes `conn` after `timeoutMs` with
 * no progress (restart it when the client makes some; pass it to
 * `writeAll`), or `undefined` without a timeout.
 */
export function closeWhenIdleFor(
  conn: Deno.Conn,
  timeoutMs: number | undefined,
): IdleClock | undefined {
  if (timeoutMs === undefined) return undefined;
  const idle = new IdleClock(timeoutMs, () => conn.close());
  idle.restart();
  return idle;
}

/**
 * Why a client's conversation failed, for one log line; an idle clock that
 * ran out (the connection was closed under a read) says so.
 */
export function whyClientFailed(err: unknown, idle?: IdleClock): string {
  return explainClientError(idle?.expired ? new ReadTimeoutError(idle.timeoutMs) : err);
}
