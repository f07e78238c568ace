/**
 * What a server calls, by name, to be robust, while its own text keeps the
 * socket calls: `Deno.listen`, the `accept()` loop, each client's reads,
 * writes and `close` (the skeleton: scripts/socket_server.ts). Nothing here
 * owns the loop. Lines go to `say`: `console.log`, or, in every server here,
 * `log` (log.ts), which never waits for a reader.
 *
 * @example An idle clock: a server's `onIdle` closes the connection (a read cannot be cancelled)
 * ```ts
 * import { IdleClock } from "./server.ts";
 * const clock = new IdleClock(50, () => console.log("idle"));
 * clock.restart(); // "idle" 50 to 63 ms later, unless restarted or stopped
 * await new Promise((resolve) => setTimeout(resolve, 100));
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
import { exitSoon, onStopSignal } from "./signals.ts";
import { formatAddress, paint, plural } from "./text.ts";

/** Where a line goes: `console.log`, or `log` of log.ts. */
export type Say = (line: string) => void;

/** What a line server answers to a line over its limit, before it hangs up. */
export const LINE_TOO_LONG: Uint8Array = new TextEncoder().encode("ERR line too long\n");
/** 16 MiB: the largest `--max-line`; a client may make the server buffer this much. */
export const MAX_LINE_LIMIT = 16 * 1024 * 1024;
/** What a server at its `--max-conns` answers a new client, before it hangs up. */
export const SERVER_BUSY: Uint8Array = new TextEncoder().encode("ERR server busy\n");

/**
 * Why `Deno.listen({ hostname, port })` threw `err`, as an error to throw. For
 * a port in use it tries a connect, to tell a server from a connection still
 * closing (TIME-WAIT).
 */
export async function whyCannotListen(
  err: unknown,
  hostname: string,
  port: number,
): Promise<Error> {
  let accepted: boolean | undefined;
  if (err instanceof Deno.errors.AddrInUse) {
    const loopback: Record<string, string> = { "0.0.0.0": "127.0.0.1", "::": "::1" };
    const host = loopback[hostname] ?? hostname; // a wildcard is reached through loopback
    try {
      (await Deno.connect({ hostname: host, port, signal: AbortSignal.timeout(1000) })).close();
      accepted = true;
    } catch (err) {
      if (err instanceof Deno.errors.ConnectionRefused) accepted = false; // else: can't tell
    }
  }
  return new Error(listenErrorText(err, hostname, port, accepted), { cause: err });
}

/**
 * Why `Deno.listen` failed, in words a person can act on. `accepted` false
 * (a connect was refused) means no server holds the port: a connection does,
 * most likely one still closing (on Linux, ports 32768-60999 are lent to clients).
 */
export function listenErrorText(
  err: unknown,
  hostname: string,
  port: number,
  accepted?: boolean,
): string {
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  const another = "pick another --port (--port 0 takes a free one)";
  if (err instanceof Deno.errors.AddrInUse && accepted === false) {
    return `port ${port} on ${host} is held by a connection, most likely one still closing ` +
      `(TIME-WAIT), not by a server: wait a minute, or ${another}; see: ss -tan | grep :${port}`;
  }
  if (err instanceof Deno.errors.AddrInUse) {
    return `port ${port} is already in use on ${host}: stop the other server, or ${another}`;
  }
  if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
    return `no permission to listen on ${host}:${port}: run with --allow-net=${host}`;
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return `cannot listen on ${host}:${port}: ${hostname} is not an address of this machine`;
  }
  return `cannot listen on ${host}:${port}: ${firstLine(err)}`;
}

/** Accept errors that only mean "that client left before we took it". */
const CLIENT_GONE = new Set(["ENOTCONN", "ECONNABORTED", "ECONNRESET", "EPROTO"]);
const failures = { pauseMs: 0, count: 0, lastReport: -Infinity };
let sayRecovered: Say | undefined;

/**
 * After `listener.accept()` threw `err`: true to accept again, false when the
 * listener was closed (Ctrl+C). A client that reset in the backlog costs
 * nothing: again at once. Out of file descriptors, accept would fail again at
 * once, in a busy loop: pause (5 ms, doubling up to 1 s), say so at most once
 * a second, and `accepting again` once a client is taken.
 */
export async function acceptAgain(err: unknown, say: Say = console.log): Promise<boolean> {
  if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
    return false;
  }
  if (CLIENT_GONE.has((err as { code?: string }).code ?? "")) return true;
  failures.pauseMs = Math.min(Math.max(failures.pauseMs * 2, 5), 1000);
  failures.count++;
  if (performance.now() - failures.lastReport >= 1000) {
    say(
      `accept failed ${failures.count} time(s): ${(err as Error).message}; ` +
        `pausing ${failures.pauseMs} ms for clients to leave`,
    );
    failures.count = 0;
    failures.lastReport = performance.now();
    sayRecovered = say;
  }
  await new Promise((resolve) => setTimeout(resolve, failures.pauseMs));
  return true;
}

/** A client was taken: if accept() had been failing, that is over. */
function accepted(): void {
  failures.pauseMs = 0;
  sayRecovered?.("accepting again");
  sayRecovered = undefined;
}

/** A client's stop signal: an `AbortSignal` with a listener costs an idle client 770 bytes. */
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

/** The clients a server has open: what Ctrl+C lets finish, then closes; what `--max-conns` counts. */
export class OpenClients {
  readonly #stops = new Map<Deno.Conn, ClientStop>();
  #emptied: (() => void)[] = [];

  /** How many clients are open. */
  get size(): number {
    return this.#stops.size;
  }

  /** Counts `conn` in; the signal returned aborts at shutdown (pass it to a line reader). */
  add(conn: Deno.Conn): StopSignal {
    accepted();
    const stop = new ClientStop();
    this.#stops.set(conn, stop);
    return stop;
  }

  /** Closes `conn`, whatever its state, and counts it out. */
  close(conn: Deno.Conn): void {
    closeQuietly(conn);
    this.#stops.delete(conn);
    if (this.#stops.size > 0) return;
    for (const resolve of this.#emptied.splice(0)) resolve();
  }

  /** Resolves once no client is open. */
  whenEmpty(): Promise<void> {
    if (this.#stops.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#emptied.push(resolve));
  }

  /**
   * Shutdown: aborts every client's signal, gives them 1.2 s to finish the
   * replies they owe, then closes the rest. Resolves to how many were open.
   */
  async closeAll(): Promise<number> {
    const open = this.#stops.size;
    for (const stop of this.#stops.values()) stop.abort();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const drained = new Promise((resolve) => {
      timer = setTimeout(resolve, 1200);
    });
    await Promise.race([this.whenEmpty(), drained]);
    clearTimeout(timer);
    for (const conn of [...this.#stops.keys()]) this.close(conn);
    return open;
  }
}

/**
 * On Ctrl+C, SIGTERM or SIGHUP: close `listener` (the accept loop ends), let
 * `clients` finish, say `NAME: shut down`, exit 0 within 2 s; a second Ctrl+C
 * exits at once. Call it before printing `listening on`.
 */
export function stopOnSignal(
  name: string,
  listener: Deno.Listener,
  clients: OpenClients,
  say: Say = console.log,
): void {
  onStopSignal(async () => {
    const exitBy = performance.now() + 1800;
    closeQuietly(listener);
    say(shutDownLine(name, await clients.closeAll()));
    await exitSoon(0, exitBy - performance.now()); // after the last lines, unless nobody reads them
  }, { name, connections: () => clients.size, say });
}

/** A server's last line: `NAME: shut down`, and how many clients it cut off. */
export function shutDownLine(name: string, open: number): string {
  const cut = open === 0 ? "" : `, and closed the ${plural(open, "client")} still connected`;
  return paint("dim", `${name}: shut down${cut}`);
}

/** A client over `--max-conns`: `ERR server busy`, then close, without waiting for it. */
export function turnAway(conn: Deno.Conn, say: Say = console.log): void {
  accepted();
  say(`${formatAddress(conn.remoteAddr)}: turned away, server full (--max-conns)`);
  writeAll(conn, SERVER_BUSY).catch(() => {}).finally(() => closeQuietly(conn));
}

/**
 * A watchdog: calls `onIdle` once when `timeoutMs` pass without a
 * `restart()`. A server restarts it when a client completes a line or takes
 * bytes of its replies, so one that trickles or never reads is idle. One
 * interval timer sweeps every clock (a timer each would cost each idle client
 * memory, and resetting one per read costs more than the read), so `onIdle`
 * runs up to a quarter of the timeout (1 s at most) late.
 */
export class IdleClock {
  readonly #onIdle: () => void;
  #since = 0;
  #expired = false;

  /** A stopped clock; `restart()` starts it. */
  constructor(readonly timeoutMs: number, onIdle: () => void) {
    this.#onIdle = onIdle;
  }

  /** Starts the clock, or starts it over. */
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

  /** Stops the clock. */
  stop(): void {
    if (IdleClock.#running.delete(this) && IdleClock.#running.size === 0) {
      clearInterval(IdleClock.#sweeper);
      IdleClock.#sweeper = undefined;
      IdleClock.#every = Infinity;
    }
  }

  static #running = new Set<IdleClock>();
  static #sweeper: ReturnType<typeof setInterval> | undefined;
  static #every = Infinity;
  static #now = 0;

  static #sweepAtLeastEvery(ms: number): void {
    const every = Math.max(10, Math.min(1000, ms));
    if (IdleClock.#sweeper !== undefined && every >= IdleClock.#every) return;
    clearInterval(IdleClock.#sweeper);
    IdleClock.#every = every;
    IdleClock.#sweeper = setInterval(IdleClock.#sweep, every);
    Deno.unrefTimer(IdleClock.#sweeper); // the sweep alone must not keep a program alive
  }

  // forEach with one function made once, not for-of: a sweep of thousands of clocks allocates
  // nothing, and V8, seeing the process idle, gives memory back.
  static #sweep = (): void => {
    IdleClock.#now = performance.now();
    IdleClock.#running.forEach(IdleClock.#check);
  };

  static #check = (clock: IdleClock): void => {
    if (IdleClock.#now - clock.#since < clock.timeoutMs) return;
    clock.stop();
    clock.#expired = true;
    clock.#onIdle();
  };
}

/** An {@linkcode IdleClock} that closes `conn` after `timeoutMs` without progress; none without a timeout. */
export function closeWhenIdleFor(conn: Deno.Conn, timeoutMs?: number): IdleClock | undefined {
  if (timeoutMs === undefined) return undefined;
  const idle = new IdleClock(timeoutMs, () => conn.close());
  idle.restart();
  return idle;
}

/** Why a client's conversation failed, for one log line; a clock that ran out says so. */
export function whyClientFailed(err: unknown, idle?: IdleClock): string {
  return explainClientError(idle?.expired ? new ReadTimeoutError(idle.timeoutMs) : err);
}

/** How a client's connection ended badly, in a few words. */
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
