/**
 * What a server calls, by name, to be robust, while its own text keeps the
 * socket calls: `Deno.listen`, the `accept()` loop, each client's reads,
 * writes and `close`. Nothing here owns the loop.
 *
 * - {@linkcode whyCannotListen}: an error for `Deno.listen` that names the
 *   address (and tells a server on the port from a connection still closing).
 * - {@linkcode acceptAgain}: what to do when `accept()` fails.
 * - {@linkcode OpenClients}: the clients a server has open: what Ctrl+C lets
 *   finish, then closes, and what `--max-conns` counts.
 * - {@linkcode stopOnSignal}: Ctrl+C, SIGTERM and SIGHUP stop the server
 *   cleanly, within 2 s.
 * - {@linkcode turnAway}: `ERR server busy` for a client over the cap.
 * - {@linkcode closeWhenIdleFor} ({@linkcode IdleClock}) and
 *   {@linkcode whyClientFailed}: a client's deadline (a read cannot be
 *   cancelled: a watchdog closes the connection), and its failure in one
 *   log line.
 *
 * @example The skeleton of every server here (see scripts/socket_server.ts)
 * ```ts ignore
 * import { acceptAgain, OpenClients, stopOnSignal, whyCannotListen } from "./server.ts";
 * let listener: Deno.TcpListener;
 * try {
 *   listener = Deno.listen({ hostname: "127.0.0.1", port: 8888 });
 * } catch (err) {
 *   throw await whyCannotListen(err, "127.0.0.1", 8888);
 * }
 * const clients = new OpenClients();
 * stopOnSignal("my_server", listener, clients);
 * console.log("listening on 127.0.0.1:8888");
 * while (true) {
 *   let conn: Deno.TcpConn;
 *   try {
 *     conn = await listener.accept();
 *   } catch (err) {
 *     if (await acceptAgain(err)) continue;
 *     break; // Ctrl+C closed the listener
 *   }
 *   clients.add(conn);
 *   // ... serve it, then clients.close(conn)
 * }
 * ```
 *
 * @module
 */

import {
  closeQuietly,
  LineTooLongError,
  ReadTimeoutError,
  type StopSignal,
  writeAll,
} from "./io.ts";
import { flushLogs, log } from "./log.ts";
import { onStopSignal } from "./signals.ts";
import { formatAddress, paint, plural } from "./text.ts";
import { TRACE_FLAG, type TraceFlag } from "./trace.ts";

/**
 * The flags every line server shares: `--host`, `--port`, `--idle-timeout`,
 * `--max-line` (64 KiB) and `--trace` ({@linkcode TRACE_FLAG}), with the
 * script's own default port and timeout.
 *
 * @example
 * ```ts
 * import { parseCli } from "./cli.ts";
 * import { lineServerFlags } from "./server.ts";
 * const args = parseCli({
 *   name: "demo",
 *   summary: "A line server.",
 *   options: lineServerFlags(8888, 60),
 *   args: ["--idle-timeout", "5"],
 * });
 * console.log(args.port, args["idle-timeout"], args["max-line"]); // 8888 5 65536
 * ```
 */
export function lineServerFlags(port: number, idleTimeout: number): LineServerFlags {
  return {
    host: {
      kind: "host",
      default: "127.0.0.1",
      help: "address to listen on (0.0.0.0 or :: to expose it)",
    },
    port: { kind: "port", short: "p", default: port, help: "TCP port, 0 for any free one" },
    "idle-timeout": {
      kind: "seconds",
      default: idleTimeout,
      help: "drop a client that neither completes a line nor takes a byte of its replies " +
        "for this long (0: never)",
    },
    "max-line": {
      kind: "integer",
      min: 1,
      max: MAX_LINE_LIMIT,
      default: 64 * 1024,
      help: "longest line in bytes; longer gets 'ERR line too long'",
    },
    trace: TRACE_FLAG,
  };
}

/** 16 MiB: the largest `--max-line` accepted; a client may make the server buffer this much. */
export const MAX_LINE_LIMIT = 16 * 1024 * 1024;

/** The flag specs returned by {@linkcode lineServerFlags}. */
export type LineServerFlags = {
  host: { kind: "host"; default: string; help: string };
  port: { kind: "port"; short: string; default: number; help: string };
  "idle-timeout": { kind: "seconds"; default: number; help: string };
  "max-line": { kind: "integer"; min: number; max: number; default: number; help: string };
  trace: TraceFlag;
};

/** How long shutdown waits for replies in flight before closing connections. */
const DRAIN_MS = 1200;
/** From Ctrl+C to exit, at most (the rest of it goes to the log's last lines). */
const STOP_MS = 1800;

/**
 * A watchdog: calls `onIdle` once when `timeoutMs` pass without a
 * {@linkcode IdleClock.restart}. A server restarts a client's clock each time
 * the client completes a line or takes bytes of its replies, so a client that
 * trickles a line byte by byte, or never reads what it is sent, is idle; a busy
 * one never is.
 *
 * One interval timer sweeps every running clock in the process: a timer per
 * clock would cost each idle connection memory, and resetting a timer per read
 * costs more than the read. So `onIdle` runs up to a quarter of the timeout (at
 * most 1 s) late. Timeouts are compared with the monotonic clock, so any
 * length works (a single `setTimeout` longer than 2^31 ms would fire at once).
 *
 * @example
 * ```ts
 * import { IdleClock } from "./server.ts";
 * const clock = new IdleClock(50, () => console.log("idle"));
 * clock.restart(); // prints "idle" some 50-60 ms later, unless restarted or stopped
 * await new Promise((resolve) => setTimeout(resolve, 100));
 * ```
 */
export class IdleClock {
  /** The silence allowed, in milliseconds. */
  readonly timeoutMs: number;
  readonly #onIdle: () => void;
  #since = 0;
  #expired = false;

  /** A stopped clock; {@linkcode IdleClock.restart} starts it. */
  constructor(timeoutMs: number, onIdle: () => void) {
    this.timeoutMs = timeoutMs;
    this.#onIdle = onIdle;
  }

  /** Starts the clock, or starts it over: `onIdle` is `timeoutMs` away again. */
  restart(): void {
    this.#since = performance.now();
    this.#expired = false;
    if (IdleClock.#running.has(this)) return;
    IdleClock.#running.add(this);
    IdleClock.#sweepAtLeastEvery(this.timeoutMs / 4);
  }

  /** True once `onIdle` was called (until the next restart). */
  get expired(): boolean {
    return this.#expired;
  }

  /** Stops the clock; `onIdle` will not be called unless it is restarted. */
  stop(): void {
    if (IdleClock.#running.delete(this) && IdleClock.#running.size === 0) {
      clearInterval(IdleClock.#timer);
      IdleClock.#timer = undefined;
      IdleClock.#every = Infinity;
    }
  }

  static #running = new Set<IdleClock>();
  static #timer: ReturnType<typeof setInterval> | undefined;
  static #every = Infinity;

  static #sweepAtLeastEvery(ms: number): void {
    const every = Math.max(10, Math.min(1000, ms));
    if (IdleClock.#timer !== undefined && every >= IdleClock.#every) return;
    clearInterval(IdleClock.#timer);
    IdleClock.#every = every;
    const timer = IdleClock.#timer = setInterval(IdleClock.#sweep, every);
    Deno.unrefTimer(timer); // the sweep alone must not keep a program alive
  }

  static #sweep(): void {
    const now = performance.now();
    // forEach rather than for-of: a sweep over thousands of idle clocks then
    // allocates nothing, V8 sees the process as idle and gives memory back.
    IdleClock.#running.forEach((clock) => {
      if (now - clock.#since < clock.timeoutMs) return;
      clock.stop();
      clock.#expired = true;
      clock.#onIdle();
    });
  }
}

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

/** Accept errors that mean only "that client left before we took it". */
const CLIENT_GONE = new Set(["ENOTCONN", "ECONNABORTED", "ECONNRESET", "EPROTO"]);
/** The longest pause after accept() fails for lack of file descriptors or memory. */
const MAX_PAUSE_MS = 1000;
/** The accept loop's failures so far (a program, or a worker, has one accept loop). */
const failures = { pauseMs: 0, count: 0, lastReport: -Infinity, reported: false };

/**
 * After `listener.accept()` threw `err`: resolves to true when the server
 * should accept again, false when the listener was closed (Ctrl+C). The two
 * causes call for opposite answers. A client that reset while it waited in
 * the backlog (`ECONNABORTED`, ...) costs nothing: accept again at once. A
 * process out of file descriptors or memory fails again at once, in a busy
 * loop, until clients leave: pause (5 ms, doubling up to 1 s), say so to
 * `say` at most once a second, and `accepting again` once a client is taken
 * ({@linkcode OpenClients.add} or {@linkcode turnAway}).
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
export async function acceptAgain(
  err: unknown,
  say: (line: string) => void = log,
): Promise<boolean> {
  if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
    return false;
  }
  if (CLIENT_GONE.has((err as { code?: string }).code ?? "")) return true;
  failures.pauseMs = Math.min(Math.max(failures.pauseMs * 2, 5), MAX_PAUSE_MS);
  failures.count++;
  const now = performance.now();
  if (now - failures.lastReport >= 1000) {
    say(
      `accept failed ${failures.count} time(s): ${(err as Error).message}; ` +
        `pausing ${failures.pauseMs} ms for clients to leave`,
    );
    failures.count = 0;
    failures.lastReport = now;
    reportRecovery = say;
  }
  await new Promise((resolve) => setTimeout(resolve, failures.pauseMs));
  return true;
}
/** Where to say `accepting again`, once a report of failures was made. */
let reportRecovery: ((line: string) => void) | undefined;

/** A client was accepted: if accept() had been failing, that is over. */
function accepted(): void {
  failures.pauseMs = 0;
  // The report clock is not reset: at its limit a server flaps (a client
  // leaves, the next is accepted, the one after fails), and must not log
  // each flap. The next report counts the failures since.
  reportRecovery?.("accepting again");
  reportRecovery = undefined;
}

/**
 * A client's stop signal. Not an `AbortSignal`: one with a listener costs an
 * idle connection some 770 bytes, a tenth of all it costs; this costs a few.
 */
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
  #emptied: (() => void)[] = [];

  /** How many clients are open. */
  get size(): number {
    return this.#stops.size;
  }

  /** Counts `conn` in; the signal returned aborts when the server shuts down. */
  add(conn: Deno.Conn): StopSignal {
    accepted();
    const stop = new ClientStop();
    this.#stops.set(conn, stop);
    return stop;
  }

  /** Closes `conn` (whatever state it is in) and counts it out. */
  close(conn: Deno.Conn): void {
    closeQuietly(conn);
    this.#stops.delete(conn);
    if (this.#stops.size > 0) return;
    for (const resolve of this.#emptied.splice(0)) resolve();
  }

  /** Resolves once no client is open (at once if none is). */
  whenEmpty(): Promise<void> {
    if (this.#stops.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#emptied.push(resolve));
  }

  /**
   * Shutdown: aborts every client's signal (a reader waiting for a line
   * gets `null`), gives them up to 1.2 s to finish the replies they owe,
   * then closes the ones still open. Resolves to how many were open.
   */
  async closeAll(): Promise<number> {
    const open = this.#stops.size;
    for (const stop of this.#stops.values()) stop.abort();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.whenEmpty(),
      new Promise((resolve) => timer = setTimeout(resolve, DRAIN_MS)),
    ]);
    clearTimeout(timer);
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
    log(shutDownLine(name, open));
    await flushLogs(exitBy - performance.now()); // the last lines, unless nobody reads them
    Deno.exit(0);
  }, { name, connections: () => clients.size });
}

/**
 * A server's last line: `NAME: shut down`, and how many clients it cut off.
 *
 * @example
 * ```ts
 * import { shutDownLine } from "./server.ts";
 * console.log(shutDownLine("socket_server", 2));
 * // socket_server: shut down, and closed the 2 clients still connected
 * ```
 */
export function shutDownLine(name: string, open: number): string {
  const cut = open === 0 ? "" : `, and closed the ${plural(open, "client")} still connected`;
  return paint("dim", `${name}: shut down${cut}`);
}

/**
 * A client over `--max-conns`: `ERR server busy`, then close, without
 * waiting for it; `say` gets one line about it.
 *
 * @example
 * ```ts ignore
 * import { turnAway } from "./server.ts";
 * if (clients.size >= maxConns) turnAway(conn);
 * ```
 */
export function turnAway(conn: Deno.Conn, say: (line: string) => void = log): void {
  accepted();
  say(`${formatAddress(conn.remoteAddr)}: turned away, server full (--max-conns)`);
  writeAll(conn, SERVER_BUSY).catch(() => {}).finally(() => closeQuietly(conn));
}

/**
 * A running {@linkcode IdleClock} that closes `conn` after `timeoutMs` with
 * no progress (restart it when the client makes some; pass it to
 * `writeAll`), or `undefined` without a timeout.
 *
 * @example
 * ```ts ignore
 * import { closeWhenIdleFor } from "./server.ts";
 * const idle = closeWhenIdleFor(conn, 60_000);
 * // ... idle?.restart() on each line; idle?.stop() when done
 * ```
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
 *
 * @example
 * ```ts
 * import { whyClientFailed } from "./server.ts";
 * console.log(whyClientFailed(new Deno.errors.ConnectionReset("reset")));
 * // connection reset by client
 * ```
 */
export function whyClientFailed(err: unknown, idle?: IdleClock): string {
  return explainClientError(idle?.expired ? new ReadTimeoutError(idle.timeoutMs) : err);
}

/** What a line server answers to a line over its limit, before it hangs up. */
export const LINE_TOO_LONG: Uint8Array = new TextEncoder().encode("ERR line too long\n");
/** What a server at its `--max-conns` answers a new client, before it hangs up. */
export const SERVER_BUSY: Uint8Array = new TextEncoder().encode("ERR server busy\n");

const PICK_ANOTHER_PORT =
  "stop the other server, or pick another --port (--port 0 takes a free one)";

/**
 * Why `Deno.listen` failed on `hostname:port`, in words a person can act on.
 * For a port in use, `accepted` is what a connect to it found: false (refused)
 * means no server listens there, and the port is held by a connection, most
 * likely one still closing (TIME-WAIT): on Linux, a server's port in the
 * range lent to clients (32768-60999) may have been a client's a moment ago.
 *
 * @example
 * ```ts
 * import { listenErrorText } from "./server.ts";
 * console.log(listenErrorText(new Deno.errors.AddrInUse("in use"), "127.0.0.1", 8888));
 * // port 8888 is already in use on 127.0.0.1: stop the other server, or pick another --port (--port 0 takes a free one)
 * console.log(listenErrorText(new Deno.errors.AddrInUse("in use"), "127.0.0.1", 50000, false));
 * // port 50000 on 127.0.0.1 is held by a connection, most likely one still closing (TIME-WAIT), not by a server: ...
 * ```
 */
export function listenErrorText(
  err: unknown,
  hostname: string,
  port: number,
  accepted?: boolean,
): string {
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  if (err instanceof Deno.errors.AddrInUse && accepted === false) {
    return `port ${port} on ${host} is held by a connection, most likely one still closing ` +
      `(TIME-WAIT), not by a server: wait a minute, or pick another --port ` +
      `(--port 0 takes a free one); see: ss -tan | grep :${port}`;
  }
  if (err instanceof Deno.errors.AddrInUse) {
    return `port ${port} is already in use on ${host}: ${PICK_ANOTHER_PORT}`;
  }
  if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
    return `no permission to listen on ${host}:${port}: run with --allow-net=${host}`;
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return `cannot listen on ${host}:${port}: ${hostname} is not an address of this machine`;
  }
  return `cannot listen on ${host}:${port}: ${firstLine(err)}`;
}

/**
 * Says in a few words why a client's connection ended badly, for a server's log.
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
  return firstLine(err);
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0];
}
