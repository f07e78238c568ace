/**
 * Deadlines. A read or a write in Deno cannot be cancelled, and a peer that
 * sends nothing (or reads nothing) would hold it forever. So a deadline here
 * is a watchdog that closes the connection when the peer makes no progress
 * for too long: the pending read or write then fails, and
 * {@linkcode closeWhenIdle} reports that as {@linkcode ReadTimeoutError}.
 *
 * @example Give a client 50 ms to send its first byte
 * ```ts
 * import { closeWhenIdle } from "./deadline.ts";
 * import { ReadTimeoutError } from "./errors.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * const conn = await listener.accept();
 * try {
 *   await closeWhenIdle(conn, 50, () => conn.read(new Uint8Array(1)));
 * } catch (err) {
 *   console.log(err instanceof ReadTimeoutError); // true
 * }
 * client.close();
 * listener.close();
 * ```
 *
 * @module
 */

import { ReadTimeoutError } from "./errors.ts";

/**
 * Seconds from a `--timeout`-style flag to milliseconds, where `0` means
 * "never" (`undefined`).
 *
 * @example
 * ```ts
 * import { secondsToMs } from "./deadline.ts";
 * console.log(secondsToMs(2.5), secondsToMs(0)); // 2500 undefined
 * ```
 */
export function secondsToMs(seconds: number): number | undefined {
  return seconds > 0 ? Math.max(1, Math.round(seconds * 1000)) : undefined;
}

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
 * import { IdleClock } from "./deadline.ts";
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
 * Runs one conversation `talk(idle)` under an idle timeout: `idle` is a
 * running {@linkcode IdleClock} that closes `conn` when it runs out (restart
 * it when the peer makes progress; pass it to {@linkcode writeAll}). A read
 * or write that fails because of that close is reported as
 * {@linkcode ReadTimeoutError}. With `timeoutMs` undefined there is no clock.
 *
 * @example Drop a client that sends nothing within 50 ms
 * ```ts
 * import { closeWhenIdle } from "./deadline.ts";
 * import { ReadTimeoutError } from "./errors.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * const conn = await listener.accept();
 * try {
 *   await closeWhenIdle(conn, 50, () => conn.read(new Uint8Array(1)));
 * } catch (err) {
 *   console.log(err instanceof ReadTimeoutError); // true
 * }
 * client.close();
 * listener.close();
 * ```
 */
export async function closeWhenIdle<T>(
  conn: { close(): void },
  timeoutMs: number | undefined,
  talk: (idle: IdleClock | undefined) => Promise<T>,
): Promise<T> {
  const idle = timeoutMs === undefined ? undefined : new IdleClock(timeoutMs, () => conn.close());
  idle?.restart();
  try {
    return await talk(idle);
  } catch (err) {
    if (idle?.expired) throw new ReadTimeoutError(idle.timeoutMs);
    throw err;
  } finally {
    idle?.stop();
  }
}
