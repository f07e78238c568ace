/**
 * Exact reads and complete writes over a TCP connection.
 *
 * TCP is a byte stream, not a message queue: one `read()` returns whatever
 * bytes have arrived so far (maybe 1, maybe 10,000), and one `write()` may
 * accept only part of what it was given when the kernel's send buffer is full.
 * These helpers loop until the job is really done.
 *
 * Neither a read nor a write can be cancelled in Deno: to give up on one
 * (a deadline, a shutdown), close the connection, and the call fails. See
 * `closeWhenIdleFor` in server.ts.
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
import { plural } from "./text.ts";

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
 * Reads exactly `n` bytes, however the network splits them.
 *
 * A single `read()` returns what has arrived so far, so this keeps reading
 * until `n` bytes are in. Bytes after the `n`th are not read.
 *
 * @throws {UnexpectedEofError} when the stream ends first; its `received`
 *   says how many bytes did arrive.
 *
 * @example
 * ```ts
 * import { readExact, UnexpectedEofError } from "./io.ts";
 *
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
export async function readExact(reader: Reader, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let filled = 0;
  while (filled < n) {
    const got = await reader.read(buf.subarray(filled));
    if (got === null) throw new UnexpectedEofError(filled, n);
    filled += got;
  }
  return buf;
}

/**
 * Reads one line, for a conversation of one line each way: up to the first
 * `\n`, however many reads that takes, without the `\n` (or `\r\n`).
 * Bytes after the `\n` are not kept: to read line after line, use
 * `LineReader` (lines.ts). At end of stream, what came is the line (as from a
 * server that answers and closes), `null` if nothing came; with
 * `requireNewline`, a line without its `\n` is a
 * {@linkcode TruncatedLineError}. When `signal` aborts (a server's
 * shutdown), a read still waiting ends as if the peer had closed.
 *
 * @throws {LineTooLongError} past `maxLine` bytes (default 64 KiB): a peer
 *   cannot make us buffer more.
 *
 * @example
 * ```ts
 * import { readOneLine } from "./io.ts";
 * const chunks = [new TextEncoder().encode("Hello "), new TextEncoder().encode("client!\r\n")];
 * const conn = { // a line that arrives in two reads
 *   read: (p: Uint8Array) => Promise.resolve(chunks.length ? (p.set(chunks[0]), chunks.shift()!.length) : null),
 * };
 * console.log(new TextDecoder().decode((await readOneLine(conn))!)); // Hello client!
 * ```
 */
export async function readOneLine(
  reader: Reader,
  options: { maxLine?: number; requireNewline?: boolean; signal?: StopSignal } = {},
): Promise<Uint8Array | null> {
  const { maxLine = 64 * 1024, requireNewline = false, signal } = options;
  // A read cannot be cancelled: with `signal`, its abort ends the wait instead.
  const stopped = signal && new Promise<null>((resolve) => {
    if (signal.aborted) resolve(null);
    else signal.addEventListener("abort", () => resolve(null), { once: true });
  });
  const limit = maxLine + 2; // the line, its `\r` and `\n`
  let buf = new Uint8Array(Math.min(256, limit)); // grown as the line does: most lines are short
  let filled = 0;
  while (true) {
    if (filled === limit) throw new LineTooLongError(maxLine);
    if (filled === buf.length) {
      const bigger = new Uint8Array(Math.min(buf.length * 4, limit));
      bigger.set(buf);
      buf = bigger;
    }
    const read = reader.read(buf.subarray(filled));
    if (stopped) read.catch(() => {}); // (it may fail after we stopped waiting for it)
    const n = await (stopped ? Promise.race([read, stopped]) : read);
    if (signal?.aborted) return null; // stopped: as if the peer had closed
    if (n === null) {
      if (filled === 0) return null;
      if (requireNewline) throw new TruncatedLineError(buf.slice(0, filled));
      return filled > maxLine ? tooLong(maxLine) : buf.subarray(0, filled);
    }
    const newline = buf.subarray(filled, filled + n).indexOf(0x0a); // look in the new bytes only
    filled += n;
    if (newline === -1) continue;
    let end = filled - n + newline;
    if (end > 0 && buf[end - 1] === 0x0d) end--; // the `\r` of `\r\n` is not text
    return end > maxLine ? tooLong(maxLine) : buf.subarray(0, end);
  }
}

/**
 * What stops a wait: an `AbortSignal`, or anything that says whether it has
 * aborted and calls a listener once when it does (such as the lighter
 * per-client signal of `OpenClients.add` in server.ts). `readOneLine` and
 * `LineReader` (lines.ts) take one.
 */
export interface StopSignal {
  /** True once it has aborted. */
  readonly aborted: boolean;
  /** Calls `listener` when it aborts. */
  addEventListener(type: "abort", listener: () => void, options: { once: true }): void;
}

function tooLong(maxLine: number): never {
  throw new LineTooLongError(maxLine);
}

/**
 * Writes every byte of `bytes`. One `write()` may accept only part of a large
 * buffer (the kernel's send buffer is full while the peer is slow to read), so
 * this loops until all of it is gone.
 *
 * A peer that stops reading makes this wait forever: pass an idle clock
 * (`IdleClock` in server.ts) as `progress` and each `write()` that gets bytes out
 * restarts it, so the clock runs out only when the peer takes nothing at all.
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
  progress?: { restart(): void },
): Promise<void> {
  let written = 0;
  while (written < bytes.byteLength) {
    written += await writer.write(bytes.subarray(written));
    progress?.restart();
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
 * Closes a connection or listener that may already be closed.
 *
 * @example
 * ```ts
 * import { closeQuietly } from "./io.ts";
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

/**
 * Resolves once the event loop has polled for I/O again, so that every other
 * connection's ready reads and writes are handled first. For a client that
 * waits on one thing at a time; a server uses `nextPoll` (many_clients.ts).
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
 * How many polls the servers' `nextPoll` (many_clients.ts) has waited for so
 * far: a clock for whoever wants to know whether a read has waited through
 * one (lines.ts).
 *
 * @example
 * ```ts
 * import { pollsSoFar } from "./io.ts";
 * const then = pollsSoFar(); // later: pollsSoFar() > then + 1 means a whole poll came and went
 * ```
 */
export function pollsSoFar(): number {
  return polls;
}
let polls = 0;

/** `nextPoll` calls this once per poll it waited for. */
export function countPoll(): void {
  polls++;
}

/** The peer closed the connection before the bytes we needed arrived. */
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

/** The peer made no progress for too long (see `IdleClock` in server.ts). */
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

/** A line grew past the limit before its `\n` arrived. */
export class LineTooLongError extends Error {
  /** The limit that was exceeded, in bytes. */
  readonly maxLine: number;
  /** Builds the error for the limit `maxLine`. */
  constructor(maxLine: number) {
    super(`line longer than ${maxLine} bytes`);
    this.name = "LineTooLongError";
    this.maxLine = maxLine;
  }
}

/** The stream ended in the middle of a line: a cut-off reply is not a reply. */
export class TruncatedLineError extends Error {
  /** The bytes of the unfinished line. */
  readonly partial: Uint8Array;
  /** Builds the error for the unfinished line `partial`. */
  constructor(partial: Uint8Array) {
    super(
      `the stream ended in the middle of a line (${
        plural(partial.length, "byte")
      } without a newline)`,
    );
    this.name = "TruncatedLineError";
    this.partial = partial;
  }
}
