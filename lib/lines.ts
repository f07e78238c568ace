/**
 * Newline-delimited framing over a byte stream.
 *
 * TCP keeps no message boundaries: one `read()` may hold half a line, or a
 * thousand lines. {@linkcode LineReader} reads with `conn.read()` into its own
 * buffer and hands out one line at a time, as the raw bytes the peer sent
 * (never decoded, so invalid UTF-8 survives), without the `\n` and without a
 * `\r` just before it.
 *
 * It reads with `read()` rather than `conn.readable` because Deno closes the
 * whole connection when `conn.readable` reaches end of stream; a server must
 * still be able to answer the last lines of a client that half-closed
 * (`nc -N`, `shutdown(SHUT_WR)`).
 *
 * @example Echo each line back, prefixed
 * ```ts
 * import { LineReader } from "./lines.ts";
 * import { writeAll } from "./io.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * const server = await listener.accept();
 * await client.write(new TextEncoder().encode("one\r\ntwo\n"));
 * await client.closeWrite();
 * for await (const line of new LineReader(server)) {
 *   await writeAll(server, new TextEncoder().encode(`got ${line.length} bytes\n`));
 * }
 * server.close();
 * console.log(new TextDecoder().decode(await new Response(client.readable).arrayBuffer()));
 * // got 3 bytes
 * // got 3 bytes
 * listener.close();
 * ```
 *
 * @module
 */

import {
  IdleClock,
  nextTurn,
  type Reader,
  type ReadOptions,
  ReadTimeoutError,
  writeAll,
  type Writer,
} from "./io.ts";

/** 64 KiB: the longest line a server accepts unless told otherwise. */
export const DEFAULT_MAX_LINE = 64 * 1024;

/** Whoever waits for the next line (the caller of readLine()). */
type Waiter = { resolve: (line: Uint8Array | null) => void; reject: (e: unknown) => void };

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;
/** An idle connection costs this much buffer; it grows only for long lines or bursts. */
const SMALL_BUFFER = 256;
const LARGE_BUFFER = 64 * 1024;

/**
 * Index of the first `\n` in `bytes[from, to)`, or -1. `words` is a
 * `Uint32Array` over the same memory. It tests four bytes at a time (a word
 * holds a newline byte exactly when `x = word ^ 0x0a0a0a0a` holds a zero byte,
 * which `(x - 0x01010101) & ~x & 0x80808080` detects), so it runs 2-6x faster
 * than `Uint8Array.prototype.indexOf`, which V8 runs byte by byte: with long
 * lines, finding newlines was a fifth of a busy server's time.
 */
function findNewline(bytes: Uint8Array, words: Uint32Array, from: number, to: number): number {
  let i = from;
  for (; i < to && (i & 3) !== 0; i++) if (bytes[i] === NEWLINE) return i;
  for (let w = i >> 2, last = to >> 2; w < last; w++) {
    const x = words[w] ^ 0x0a0a0a0a;
    if (((x - 0x01010101) & ~x & 0x80808080) !== 0) break; // a newline in this word
    i = (w + 1) << 2;
  }
  for (; i < to; i++) if (bytes[i] === NEWLINE) return i;
  return -1;
}

/**
 * A line grew past the limit before its `\n` arrived. The reader does not
 * buffer more than the limit, so memory stays bounded whatever the peer sends.
 *
 * @example
 * ```ts
 * import { LineTooLongError } from "./lines.ts";
 * console.log(new LineTooLongError(10).message); // "line longer than 10 bytes"
 * ```
 */
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

/**
 * The stream ended in the middle of a line: the bytes after the last `\n`
 * were cut off (the peer crashed, or closed too early). Thrown only by a
 * {@linkcode LineReader} with `requireNewline`, as a client of a line
 * protocol wants: a cut-off reply is not a reply.
 *
 * @example
 * ```ts
 * import { TruncatedLineError } from "./lines.ts";
 * const err = new TruncatedLineError(new TextEncoder().encode("OK ... hel"));
 * console.log(err.message); // "the stream ended in the middle of a line (10 bytes without a newline)"
 * ```
 */
export class TruncatedLineError extends Error {
  /** The bytes of the unfinished line. */
  readonly partial: Uint8Array;
  /** Builds the error for the unfinished line `partial`. */
  constructor(partial: Uint8Array) {
    const bytes = `${partial.length} byte${partial.length === 1 ? "" : "s"}`;
    super(`the stream ended in the middle of a line (${bytes} without a newline)`);
    this.name = "TruncatedLineError";
    this.partial = partial;
  }
}

/** Options for {@linkcode LineReader}. */
export interface LineReaderOptions extends ReadOptions {
  /** Longest line accepted, in bytes, not counting `\r\n`. Default 64 KiB. */
  maxLine?: number;
  /**
   * Bytes after the last `\n` at end of stream are an error
   * ({@linkcode TruncatedLineError}) instead of a last line. For clients,
   * whose replies always end in `\n`.
   */
  requireNewline?: boolean;
}

/**
 * Splits a byte stream into lines, however the bytes arrive.
 *
 * A line returned by {@linkcode LineReader.readLine} is a view into the
 * reader's buffer: use it (write it, decode it) before the next call, or copy
 * it with `line.slice()` to keep it.
 *
 * At end of stream, bytes after the last `\n` are returned as a final line, as
 * Go's `bufio.Scanner` and Python's `readline()` do (or, with
 * `requireNewline`, are a {@linkcode TruncatedLineError}).
 *
 * `timeoutMs` bounds each {@linkcode LineReader.readLine} call: the line must
 * be complete within it, however many bytes trickle in meanwhile.
 *
 * @example
 * ```ts
 * import { LineReader } from "./lines.ts";
 * const bytes = new TextEncoder().encode("a\nb\r\nc");
 * let sent = false;
 * const source = {
 *   read(p: Uint8Array) {
 *     if (sent) return Promise.resolve(null);
 *     p.set(bytes);
 *     sent = true;
 *     return Promise.resolve(bytes.length);
 *   },
 * };
 * const lines = new LineReader(source);
 * for await (const line of lines) console.log(new TextDecoder().decode(line));
 * // a
 * // b
 * // c
 * ```
 */
export class LineReader {
  readonly #reader: Reader;
  readonly #timeoutMs: number | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #maxLine: number;
  readonly #requireNewline: boolean;
  #clock: IdleClock | undefined; // the deadline of the readLine() waiting now
  #buf = new Uint8Array(SMALL_BUFFER);
  #words: Uint32Array | undefined; // the same bytes, for findNewline, once the buffer grows
  #start = 0; // first byte not yet handed out
  #end = 0; // one past the last byte read
  #scanned = 0; // [#start, #scanned) is known to hold no newline
  #eof = false;
  #reading = false; // a read is in flight
  #error: unknown; // the read error, once one happened
  #lastRead = 0;
  #waiter: Waiter | undefined;

  /** Reads lines from `reader` (a `Deno.Conn`, `Deno.stdin`, ...). */
  constructor(reader: Reader, options: LineReaderOptions = {}) {
    this.#reader = reader;
    this.#maxLine = options.maxLine ?? DEFAULT_MAX_LINE;
    this.#timeoutMs = options.timeoutMs;
    this.#signal = options.signal;
    this.#requireNewline = options.requireNewline ?? false;
  }

  /**
   * Readers waiting on each abort signal. One listener per signal, not one
   * per reader: a listener would outlive its reader (and keep its buffer)
   * for as long as the signal lives, which for a server's shutdown signal is
   * forever. A reader is in the set only while a readLine() waits, so a
   * reader that is dropped without close() is not kept either.
   */
  static #aborting = new WeakMap<AbortSignal, Set<LineReader>>();

  static #hookAbort(reader: LineReader, signal: AbortSignal): void {
    let readers = LineReader.#aborting.get(signal);
    if (readers === undefined) {
      const waiting = new Set<LineReader>();
      readers = waiting;
      LineReader.#aborting.set(signal, waiting);
      signal.addEventListener("abort", () => {
        for (const r of waiting) {
          r.#stop();
          r.#settle()?.resolve(null);
        }
        waiting.clear();
      }, { once: true });
    }
    readers.add(reader);
  }

  /**
   * The next line, without its `\n` (and `\r\n`), or `null` at end of stream
   * (or when the `signal` option aborts).
   *
   * @throws {LineTooLongError} when a line exceeds `maxLine`.
   * @throws {ReadTimeoutError} when no whole line came within `timeoutMs`.
   *   The reader stays usable: call `readLine()` again to keep waiting (with
   *   a new deadline), and bytes that arrive late are not lost.
   * @throws {TruncatedLineError} with `requireNewline`, when the stream ends
   *   in the middle of a line.
   */
  readLine(): Promise<Uint8Array | null> {
    // Not an `async` function, on purpose: an idle connection waits here, and
    // every suspended async frame (or chained promise) costs it memory.
    try {
      const line = this.#takeLine();
      if (line !== undefined) return Promise.resolve(line);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#error !== undefined) return Promise.reject(this.#error);
    if (this.#signal?.aborted) {
      this.#stop();
      return Promise.resolve(null);
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
      if (this.#signal !== undefined) LineReader.#hookAbort(this, this.#signal);
      if (this.#timeoutMs !== undefined) {
        this.#clock ??= new IdleClock(this.#timeoutMs, this.#onTimeout);
        this.#clock.restart();
      }
      this.#read();
    });
  }

  /** A line, `null` at end of stream, or `undefined` when more bytes are needed. */
  #takeLine(): Uint8Array | null | undefined {
    const line = this.readBufferedLine();
    if (line !== null) return line;
    // No newline yet: `\r` may still come, so allow one byte for it.
    if (this.#end - this.#start > this.#maxLine + 1) throw new LineTooLongError(this.#maxLine);
    if (!this.#eof) return undefined;
    if (this.#start === this.#end) return null;
    // The stream ended after an unfinished line: the same rules as a whole one.
    const start = this.#start;
    let end = this.#end;
    this.#start = this.#scanned = this.#end;
    if (this.#requireNewline) throw new TruncatedLineError(this.#buf.slice(start, end));
    if (this.#buf[end - 1] === CARRIAGE_RETURN) end--;
    if (end - start > this.#maxLine) throw new LineTooLongError(this.#maxLine);
    return this.#buf.subarray(start, end);
  }

  /**
   * The next complete line if one is already buffered, else `null`; never
   * reads. A server takes every line that arrived in one read this way and
   * answers them all with one write.
   *
   * @throws {LineTooLongError} when that line exceeds `maxLine`.
   */
  readBufferedLine(): Uint8Array | null {
    const newline = this.#findNewline();
    if (newline === -1) return null;
    const start = this.#start;
    this.#start = this.#scanned = newline + 1;
    let end = newline;
    if (end > start && this.#buf[end - 1] === CARRIAGE_RETURN) end--;
    if (end - start > this.#maxLine) throw new LineTooLongError(this.#maxLine);
    return this.#buf.subarray(start, end);
  }

  /** Iterates over the lines until end of stream. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    while (true) {
      const line = await this.readLine();
      if (line === null) return;
      yield line;
    }
  }

  #findNewline(): number {
    // The small buffer of a quiet connection holds short lines: indexOf will
    // do, and the connection is spared a second view of its buffer.
    const found = this.#words === undefined
      ? this.#buf.indexOf(NEWLINE, this.#scanned)
      : findNewline(this.#buf, this.#words, this.#scanned, this.#end);
    if (found === -1 || found >= this.#end) {
      this.#scanned = this.#end; // (a hit past #end is a stale byte from an earlier read)
      return -1;
    }
    return found;
  }

  /** Starts a read for the waiter, unless one is in flight. */
  #read(): void {
    // A read that outlived an earlier timeout is still filling our buffer:
    // wait for it rather than start another, so no byte is lost or reordered.
    if (this.#reading) return;
    this.#makeRoom();
    this.#reading = true;
    this.#reader.read(this.#buf.subarray(this.#end)).then(this.#onRead, this.#onReadError);
  }

  #onTimeout = (): void => {
    this.#settle()?.reject(new ReadTimeoutError(this.#timeoutMs!));
  };

  // Made once per reader, not per read, and passed to then(): no closure,
  // no chained promise per read.
  #onRead = (n: number | null): void => {
    this.#reading = false;
    if (this.#eof) return; // stopped by the signal meanwhile: these bytes are not wanted
    this.#filled(n);
    const waiter = this.#waiter;
    if (waiter === undefined) return; // it timed out: the bytes wait for the next readLine()
    let line: Uint8Array | null | undefined;
    try {
      line = this.#takeLine();
    } catch (err) {
      this.#settle()?.reject(err);
      return;
    }
    if (line === undefined) this.#read(); // no whole line yet
    else this.#settle()?.resolve(line);
  };

  #onReadError = (err: unknown): void => {
    this.#reading = false;
    this.#error = err; // every later readLine() fails the same way
    this.#settle()?.reject(err);
  };

  /** Stopped by the signal, not by the peer: a half-received line is not a line. */
  #stop(): void {
    this.#eof = true;
    this.#start = this.#scanned = this.#end;
  }

  #filled(n: number | null): void {
    if (n === null) {
      this.#eof = true;
      return;
    }
    this.#end += n;
    this.#lastRead = n;
    // A read that filled all the room suggests a burst: read bigger next time.
    if (this.#end === this.#buf.length && this.#buf.length < LARGE_BUFFER) {
      this.#resize(Math.min(this.#buf.length * 4, LARGE_BUFFER));
    }
  }

  /**
   * Ends a `readLine()` that is waiting, if any, with `null`, and lets go of the reader's timer and signal. (A reader holds
   * them only while a `readLine()` waits, so one dropped without `close()`
   * leaks nothing.)
   */
  close(): void {
    this.#settle()?.resolve(null);
  }

  /** Takes the waiter, so that exactly one outcome reaches it, and stops watching for it. */
  #settle(): Waiter | undefined {
    const waiter = this.#waiter;
    if (waiter === undefined) return undefined;
    this.#waiter = undefined;
    this.#clock?.stop();
    if (this.#signal !== undefined) LineReader.#aborting.get(this.#signal)?.delete(this);
    return waiter;
  }

  /** Ensures free space after #end, keeping the buffer no bigger than needed. */
  #makeRoom(): void {
    const pending = this.#end - this.#start;
    if (pending === 0) {
      // Every byte was handed out: read into the front again (else each read
      // would get less room, split lines, and grow the buffer for nothing).
      this.#start = this.#end = this.#scanned = 0;
      // Caught up with light traffic: an idle connection should cost little memory.
      if (this.#buf.length > SMALL_BUFFER && this.#lastRead < SMALL_BUFFER) {
        this.#resize(SMALL_BUFFER);
      }
      return;
    }
    if (this.#end < this.#buf.length) return;
    if (this.#start > 0) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#scanned -= this.#start;
      this.#end = pending;
      this.#start = 0;
      if (pending < this.#buf.length / 2) return;
    }
    // A long line: grow, but never past what the limit allows.
    const cap = Math.max(Math.ceil((this.#maxLine + 2) / 4) * 4, LARGE_BUFFER); // whole words
    this.#resize(Math.min(this.#buf.length * 2, cap));
  }

  #resize(size: number): void {
    if (size === this.#buf.length) return;
    const pending = this.#buf.subarray(this.#start, this.#end);
    const next = new Uint8Array(size);
    next.set(pending);
    this.#scanned -= this.#start;
    this.#end = pending.length;
    this.#start = 0;
    this.#buf = next;
    this.#words = size > SMALL_BUFFER ? new Uint32Array(next.buffer) : undefined;
  }
}

/** What a server answers to a line over its limit, before it closes the connection. */
export const LINE_TOO_LONG: Uint8Array = new TextEncoder().encode("ERR line too long\n");
/** Reply batches this big (a busy stream) are built in a buffer kept between writes. */
const KEEP_OUTPUT_FROM = 4096;
const NO_BYTES = new Uint8Array(0);
/**
 * Small reply batches (the ping-pong case) are built in 256-byte buffers
 * shared by all connections: a buffer goes back to `spare` once its write is
 * done. Allocating a fresh ArrayBuffer per reply cost as much JavaScript time
 * as everything else a round trip does, and keeping one per connection would
 * cost every idle client its size.
 */
const SMALL_REPLY = 256;
const MAX_SPARE = 1024;
const spare: Uint8Array[] = [];

/** A copy of `bytes[0, used)` in a buffer of at least `needed` bytes (doubling). */
function grow(bytes: Uint8Array, used: number, needed: number): Uint8Array {
  // A new batch that fits in a small buffer: reuse a spare one.
  if (used === 0 && needed <= SMALL_REPLY) return spare.pop() ?? new Uint8Array(SMALL_REPLY);
  const bigger = new Uint8Array(Math.max(needed, bytes.length * 2, SMALL_REPLY));
  bigger.set(bytes.subarray(0, used));
  return bigger;
}

/** Options for {@linkcode serveLines}. */
export interface ServeLinesOptions {
  /** Longest line accepted, in bytes, not counting `\r\n`. Default 64 KiB. */
  maxLine?: number;
  /**
   * Close the connection (and throw {@linkcode ReadTimeoutError}) when for
   * this long the peer has neither completed a line nor taken any byte of
   * the replies owed to it. Unset: never.
   */
  idleTimeoutMs?: number;
  /** Stop at the next line boundary when this aborts (graceful shutdown). */
  signal?: AbortSignal;
}

/**
 * Answers every line of a connection with `reply(line)` until the peer is done.
 *
 * Replies to lines that arrived together go out in one `write()`, which is
 * what makes pipelined clients fast. A line over `maxLine` is answered with
 * `ERR line too long` and {@linkcode LineTooLongError} is thrown, so the
 * caller closes the connection. The line given to `reply` is a view into the
 * reader's buffer, valid until `reply` returns; `reply` may return it inside
 * its parts without copying (the parts are copied into the batch at once).
 *
 * `idleTimeoutMs` is one clock for both directions: it restarts when a line
 * is complete and when a write gets bytes out. A client that trickles a line
 * byte by byte, or sends lines but never reads the replies, runs it out; a
 * busy client never does, however long its replies take to send. (A write
 * is seen to progress only when the kernel wakes it, after about a third of
 * its send buffer drained: a reader slower than that per timeout looks idle.)
 *
 * @example An `OK ... <line>` server for one client
 * ```ts
 * import { serveLines } from "./lines.ts";
 * const OK = new TextEncoder().encode("OK ... ");
 * const NL = new TextEncoder().encode("\n");
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * await client.write(new TextEncoder().encode("hello\nworld\n"));
 * await client.closeWrite();
 * const conn = await listener.accept();
 * await serveLines(conn, (line) => [OK, line, NL]);
 * conn.close();
 * console.log(await new Response(client.readable).text());
 * // OK ... hello
 * // OK ... world
 * listener.close();
 * ```
 */
export async function serveLines(
  conn: Reader & Writer & { close(): void },
  reply: (line: Uint8Array) => Uint8Array[],
  options: ServeLinesOptions = {},
): Promise<void> {
  const lines = new LineReader(conn, { maxLine: options.maxLine, signal: options.signal });
  // Neither a read nor a write can be cancelled in Deno; closing the
  // connection ends both (they fail), which is what an idle client gets.
  let idle: IdleClock | undefined;
  if (options.idleTimeoutMs !== undefined) {
    idle = new IdleClock(options.idleTimeoutMs, () => conn.close());
    idle.restart();
  }
  // Replies are copied into `out` as they are made (the reader's buffer is
  // reused by the next read) and sent with one write per batch of lines. One
  // write may be in flight while the next lines are read: the kernel keeps
  // receiving while we send. Before `out` is filled again, that write must
  // finish, which keeps replies in order and memory bounded when the client
  // reads slowly.
  let out: Uint8Array = NO_BYTES;
  let size = 0;
  let writing: Promise<void> | undefined;
  const append = (parts: Uint8Array[]) => {
    for (let p = 0; p < parts.length; p++) {
      const part = parts[p];
      const n = part.length;
      if (size + n > out.length) out = grow(out, size, size + n);
      // Tiny parts (a prefix, a newline) are copied faster by hand than by set().
      if (n > 16) out.set(part, size);
      else for (let i = 0; i < n; i++) out[size + i] = part[i];
      size += n;
    }
  };
  const send = () => {
    writing = writeAll(conn, out.subarray(0, size), idle);
    if (out.length === SMALL_REPLY) {
      const small = out;
      out = NO_BYTES;
      writing = writing.then(() => {
        if (spare.length < MAX_SPARE) spare.push(small); // its write is done: free for reuse
      });
    }
    writing.catch(() => {}); // awaited before the next batch; not unhandled meanwhile
    // A busy stream keeps its buffer: a fresh 64 KiB array per batch costs
    // more (zero-filling, page faults) than the copy. After a small batch it
    // is let go, so that an idle connection holds no output buffer.
    if (size < KEEP_OUTPUT_FROM) out = NO_BYTES;
    size = 0;
  };
  try {
    while (true) {
      const first = await lines.readLine();
      if (first === null) break;
      idle?.restart(); // a whole line came: this client is not idle
      await writing; // `out` is free again
      append(reply(first));
      // Every other line that came in the same read: answered without awaiting.
      for (let line = lines.readBufferedLine(); line !== null; line = lines.readBufferedLine()) {
        append(reply(line));
      }
      const busy = size >= KEEP_OUTPUT_FROM;
      send();
      if (busy) await nextTurn(); // a flooding client lets the others have their turn
    }
    await writing;
  } catch (err) {
    // The clock closed the connection under a read or a write: say why.
    if (idle !== undefined && idle.expired) throw new ReadTimeoutError(idle.timeoutMs);
    if (err instanceof LineTooLongError) {
      await writing;
      append([LINE_TOO_LONG]); // after the replies to the lines before it
      send();
      await writing;
    }
    throw err;
  } finally {
    idle?.stop();
    lines.close();
  }
}
