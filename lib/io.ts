/**
 * Exact reads and complete writes over a TCP connection.
 *
 * TCP is a byte stream, not a message queue: one `read()` returns whatever
 * bytes have arrived so far (maybe 1, maybe 10,000), and one `write()` may
 * accept only part of what it was given when the kernel's send buffer is full.
 * These helpers loop until the job is really done.
 *
 * @example Read a 4-byte header, then write a reply in full
 * ```ts
 * import { readExact, writeAll } from "./io.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * const server = await listener.accept();
 * await writeAll(client, new Uint8Array([1, 2, 3, 4]));
 * const header = await readExact(server, 4);
 * console.log(header); // Uint8Array(4) [ 1, 2, 3, 4 ]
 * client.close();
 * server.close();
 * listener.close();
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers";

/** Anything with Deno's `read(buffer)` contract: a `Deno.Conn`, `Deno.stdin`... */
export interface Reader {
  /** Reads up to `p.byteLength` bytes into `p`; `null` means end of stream. */
  read(p: Uint8Array): Promise<number | null>;
}

/** Anything with Deno's `write(bytes)` contract, which may write fewer bytes. */
export interface Writer {
  /** Writes some prefix of `p` and returns how many bytes it wrote. */
  write(p: Uint8Array): Promise<number>;
}

/**
 * The peer closed the connection before the bytes we needed arrived.
 *
 * @example
 * ```ts
 * import { UnexpectedEofError } from "./io.ts";
 * const err = new UnexpectedEofError(7, 32);
 * console.log(err.message); // "connection closed after 7 of 32 bytes"
 * ```
 */
export class UnexpectedEofError extends Error {
  /** How many bytes arrived before the end of the stream. */
  readonly received: number;
  /** How many bytes were wanted. */
  readonly expected: number;
  /** Builds the error for `received` of `expected` bytes. */
  constructor(received: number, expected: number) {
    super(`connection closed after ${received} of ${expected} bytes`);
    this.name = "UnexpectedEofError";
    this.received = received;
    this.expected = expected;
  }
}

/**
 * The peer sent nothing for too long, or the read was cancelled by a signal.
 *
 * @example
 * ```ts
 * import { ReadTimeoutError } from "./io.ts";
 * console.log(new ReadTimeoutError(5000).message); // "no data for 5 s"
 * ```
 */
export class ReadTimeoutError extends Error {
  /** The silence that was allowed, in milliseconds. */
  readonly timeoutMs: number;
  /** Builds the error for a silence of `timeoutMs` milliseconds. */
  constructor(timeoutMs: number) {
    super(`no data for ${timeoutMs / 1000} s`);
    this.name = "ReadTimeoutError";
    this.timeoutMs = timeoutMs;
  }
}

/** Options for {@linkcode readSome} and {@linkcode readExact}. */
export interface ReadOptions {
  /** Give up with {@linkcode ReadTimeoutError} when no byte arrives for this long. */
  timeoutMs?: number;
  /**
   * Stop waiting when this signal aborts: the read then resolves to `null`, as
   * if the peer had closed. Used for graceful shutdown.
   */
  signal?: AbortSignal;
}

/**
 * One `read()` that can be cut short by a timeout or an abort signal.
 *
 * `conn.read()` itself cannot be cancelled. When the timeout or the signal
 * wins, the read underneath is still pending and would swallow the next bytes
 * to arrive, so the caller must close the connection afterwards; its
 * eventual rejection is caught here so that it cannot crash the process.
 *
 * @example
 * ```ts
 * import { readSome } from "./io.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * const server = await listener.accept();
 * await client.write(new Uint8Array([42]));
 * const buf = new Uint8Array(16);
 * console.log(await readSome(server, buf, { timeoutMs: 1000 })); // 1
 * client.close();
 * server.close();
 * listener.close();
 * ```
 */
export function readSome(
  reader: Reader,
  buf: Uint8Array,
  options: ReadOptions = {},
): Promise<number | null> {
  const { timeoutMs, signal } = options;
  if (timeoutMs === undefined && signal === undefined) return reader.read(buf);
  if (signal?.aborted) return Promise.resolve(null);
  return raceRead(reader.read(buf), options);
}

// Waits for a read already started, but no longer than `timeoutMs` and no
// longer than `signal` allows (then resolves `null`). The read itself goes on;
// if it later fails, that failure is swallowed so it cannot crash the process.
function raceRead(
  read: Promise<number | null>,
  options: ReadOptions,
): Promise<number | null> {
  const { timeoutMs, signal } = options;
  if (timeoutMs === undefined && signal === undefined) return read;
  if (signal?.aborted) {
    read.catch(() => {});
    return Promise.resolve(null);
  }
  return new Promise<number | null>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let settled = false;
    const onAbort = () => finish(() => resolve(null));
    const finish = (settle: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      settle();
    };
    if (timeoutMs !== undefined) {
      timer = setTimeout(
        () => finish(() => reject(new ReadTimeoutError(timeoutMs))),
        timeoutMs,
      );
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    read.then(
      (n) => finish(() => resolve(n)),
      (err) => finish(() => reject(err)),
    );
  });
}

/**
 * Reads exactly `n` bytes, however the network splits them.
 *
 * A single `read()` returns what has arrived so far, so this keeps reading
 * until `n` bytes are in. Bytes after the `n`th are not read.
 *
 * @throws {UnexpectedEofError} when the stream ends first; its `received`
 *   says how many bytes did arrive.
 * @throws {ReadTimeoutError} when `timeoutMs` passes without a byte.
 *
 * @example
 * ```ts
 * import { readExact, UnexpectedEofError } from "./io.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * const server = await listener.accept();
 * await client.write(new Uint8Array([1, 2, 3]));
 * await client.closeWrite(); // 3 bytes, then end of stream
 * try {
 *   await readExact(server, 32);
 * } catch (err) {
 *   if (err instanceof UnexpectedEofError) console.log(err.received); // 3
 * }
 * client.close();
 * server.close();
 * listener.close();
 * ```
 */
export async function readExact(
  reader: Reader,
  n: number,
  options: ReadOptions = {},
): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let filled = 0;
  while (filled < n) {
    const got = await readSome(reader, buf.subarray(filled), options);
    if (got === null) throw new UnexpectedEofError(filled, n);
    filled += got;
  }
  return buf;
}

/**
 * Writes every byte of `bytes`. One `write()` may accept only part of a large
 * buffer (the kernel's send buffer is full while the peer is slow to read), so
 * this loops until all of it is gone.
 *
 * A peer that stops reading makes this wait forever: pass an
 * {@linkcode IdleClock} as `progress` and each `write()` that gets bytes out
 * restarts it, so the clock fires only when the peer takes nothing at all.
 *
 * @example
 * ```ts
 * import { writeAll } from "./io.ts";
 * await writeAll(Deno.stdout, new TextEncoder().encode("hello\n"));
 * ```
 */
export async function writeAll(
  writer: Writer,
  bytes: Uint8Array,
  progress?: IdleClock,
): Promise<void> {
  let written = 0;
  while (written < bytes.byteLength) {
    written += await writer.write(bytes.subarray(written));
    progress?.restart();
  }
}

/**
 * Resolves once the event loop has polled for I/O again, so that every other
 * connection's ready reads and writes are handled first.
 *
 * Why a server needs it: a read or write that can complete at once does so
 * without going back to the event loop. A client that keeps its socket full
 * would then be served on and on, batch after batch, while every other
 * connection waits (a probe waited 0.5-0.8 s among 20 flooding clients; with
 * a `nextTurn()` after each big batch, 20-30 ms). `setImmediate` runs after
 * the next poll; `setTimeout(0)` would too, but timers set from timers are
 * held back 4 ms each.
 *
 * @example
 * ```ts
 * import { nextTurn } from "./io.ts";
 * await nextTurn();
 * ```
 */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Seconds from a `--timeout`-style flag to milliseconds, where `0` means
 * "never" (`undefined`).
 *
 * @example
 * ```ts
 * import { secondsToMs } from "./io.ts";
 * console.log(secondsToMs(2.5), secondsToMs(0)); // 2500 undefined
 * ```
 */
export function secondsToMs(seconds: number): number | undefined {
  return seconds > 0 ? Math.round(seconds * 1000) : undefined;
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
 * import { IdleClock } from "./io.ts";
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
 * Joins byte arrays into one, for a single `write()` instead of several.
 *
 * @example
 * ```ts
 * import { concatBytes } from "./io.ts";
 * console.log(concatBytes([new Uint8Array([1]), new Uint8Array([2, 3])]));
 * // Uint8Array(3) [ 1, 2, 3 ]
 * ```
 */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let size = 0;
  for (const part of parts) size += part.byteLength;
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
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
 * import { closeWhenIdle, ReadTimeoutError } from "./io.ts";
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
