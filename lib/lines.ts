/**
 * Newline-delimited framing over a byte stream, and nothing else.
 *
 * TCP keeps no message boundaries: one `read()` may hold half a line, or a
 * thousand lines. {@linkcode LineReader} reads with `conn.read()` into its own
 * buffer and hands out one line at a time, as the raw bytes the peer sent
 * (never decoded, so invalid UTF-8 survives), without the `\n` and without a
 * `\r` just before it. Compare Go's `bufio.Scanner` and std's `TextLineStream`.
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
 * console.log(await new Response(client.readable).text());
 * // got 3 bytes
 * // got 3 bytes
 * listener.close();
 * ```
 *
 * @module
 */

import { findNewline } from "./find_newline.ts";
import {
  LineTooLongError,
  pollsSoFar,
  type Reader,
  type StopSignal,
  TruncatedLineError,
} from "./io.ts";

/** 64 KiB: the longest line a server accepts unless told otherwise. */
export const DEFAULT_MAX_LINE = 64 * 1024;

/** An idle connection costs this much buffer; it grows only for long lines or bursts. */
const SMALL_BUFFER = 256;
const LARGE_BUFFER = 64 * 1024;
const CARRIAGE_RETURN = 0x0d;

/**
 * Buffers bigger than the small one are lent by a pool that all readers
 * share, and given back when a reader shrinks: a thousand clients that each
 * send one long line, one after the other, then reuse the same few buffers
 * instead of leaving a thousand sets behind for the garbage collector (whose
 * freed memory the process keeps: 189 KiB per idle client after a 60 KB
 * line, before the pool).
 */
const pool = new Map<number, Uint8Array<ArrayBuffer>[]>();
/**
 * At most this many readers wait for their next read with a big buffer (1
 * MiB of 64 KiB buffers): the busiest, which a 256-byte first read would
 * slow (a closed-loop flood lost 15% of its throughput that way). Beyond
 * them, a reader with nothing much pending waits with a small one, so that
 * however many clients sent a burst and went quiet, they hold 1 MiB at most.
 * 16 rather than 32: 1,000 clients that each sent a 60 KB line then hold
 * 18.3 instead of 20.0 KiB each (`deno task bench --only '60 KB'`), and the
 * floods' throughput did not move beyond the bench's noise.
 * Waiting means a read that a whole poll has come and gone without
 * completing (`pollsSoFar` in io.ts): a flood's reads complete at once, and
 * are not counted.
 */
const MAX_WAITING_BIG = 16;
/** Readers with a read in flight into a big buffer, and the poll count when it started. */
const bigReads = new Map<object, number>();

/** How many big reads have been waiting (up to MAX_WAITING_BIG: no need to count further). */
function waitingBig(): number {
  const now = pollsSoFar();
  let n = 0;
  for (const since of bigReads.values()) {
    if (now > since + 3 && ++n === MAX_WAITING_BIG) break;
  }
  return n;
}
const MAX_POOLED = 8; // buffers of each size
/**
 * The busiest readers' 64 KiB buffers are cut from one 1 MiB block, made on
 * first need: buffers allocated one by one, among everything else a
 * server allocates, left the memory around them unusable for anything else
 * (a thousand clients that sent a burst and went quiet held 43 instead of
 * 18 KiB each).
 */
let block: Uint8Array<ArrayBuffer>[] | undefined;
const BLOCK_BYTES = MAX_WAITING_BIG * LARGE_BUFFER;

function borrow(size: number): Uint8Array<ArrayBuffer> {
  if (size === LARGE_BUFFER) {
    if (block === undefined) {
      const memory = new ArrayBuffer(BLOCK_BYTES);
      block = Array.from(
        { length: MAX_WAITING_BIG },
        (_, i) => new Uint8Array(memory, i * LARGE_BUFFER, LARGE_BUFFER),
      );
    }
    const cut = block.pop();
    if (cut) return cut;
  }
  return pool.get(size)?.pop() ?? new Uint8Array(size);
}

function giveBack(buffer: Uint8Array<ArrayBuffer>): void {
  if (buffer.buffer.byteLength === BLOCK_BYTES) return void block!.push(buffer);
  if (buffer.length <= SMALL_BUFFER || buffer.length > LARGE_BUFFER) return;
  const spare = pool.get(buffer.length);
  if (spare === undefined) pool.set(buffer.length, [buffer]);
  else if (spare.length < MAX_POOLED) spare.push(buffer);
}

/** Options for {@linkcode LineReader}. */
export interface LineReaderOptions {
  /** Longest line accepted, in bytes, not counting `\r\n`. Default 64 KiB. */
  maxLine?: number;
  /**
   * Bytes after the last `\n` at end of stream are a
   * {@linkcode TruncatedLineError} instead of a last line. For clients,
   * whose replies always end in `\n`.
   */
  requireNewline?: boolean;
  /**
   * When it aborts, the reader stops: a waiting `readLine()` returns `null`
   * as if the peer had closed (graceful shutdown). The reader listens to it
   * until it aborts, so give each connection a signal of its own, as
   * `OpenClients.add` (server.ts) gives it.
   */
  signal?: StopSignal;
}

/**
 * Splits a byte stream into lines, however the bytes arrive.
 *
 * A line is a view into the reader's buffer: use it (write it, decode it)
 * before the next read, or copy it with `line.slice()` to keep it.
 * At end of stream, bytes after the last `\n` are a final line, as Go's
 * `bufio.Scanner` and Python's `readline()` return them. A line longer than
 * `maxLine` is a {@linkcode LineTooLongError}: the reader never buffers more,
 * whatever the peer sends.
 *
 * To give up waiting (a deadline), close the connection: the read fails.
 *
 * @example
 * ```ts
 * import { LineReader } from "./lines.ts";
 * const bytes = new TextEncoder().encode("a\nb\r\nc"); // arrives in one read
 * let sent = false;
 * const source = {
 *   read: (p: Uint8Array) => Promise.resolve(sent ? null : (p.set(bytes), sent = true, bytes.length)),
 * };
 * for await (const line of new LineReader(source)) console.log(new TextDecoder().decode(line));
 * // a
 * // b
 * // c
 * ```
 */
export class LineReader {
  readonly #reader: Reader;
  readonly #maxLine: number;
  readonly #requireNewline: boolean;
  #buf = new Uint8Array(SMALL_BUFFER);
  #words: Uint32Array | undefined; // the same bytes as words, for findNewline, once the buffer grows
  #start = 0; // first byte not yet handed out
  #end = 0; // one past the last byte read
  #scanned = 0; // [#start, #scanned) holds no newline
  #eof = false; // the peer closed (or we stopped)
  #reading = false; // a read is in flight
  #error: unknown; // the read error, once one happened
  #tooLong: unknown; // a line over the limit, found while batching the lines before it
  #lastFilled = false; // the last read filled all the room it had: more may be waiting
  #peak = SMALL_BUFFER; // the size a burst grew the buffer to
  #waiter: { resolve: (line: Uint8Array | null) => void; reject: (e: unknown) => void } | undefined;

  /** Reads lines from `reader` (a `Deno.Conn`, `Deno.stdin`, ...). */
  constructor(reader: Reader, options: LineReaderOptions = {}) {
    this.#reader = reader;
    this.#maxLine = options.maxLine ?? DEFAULT_MAX_LINE;
    this.#requireNewline = options.requireNewline ?? false;
    if (options.signal?.aborted) this.close();
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  /**
   * The next line, without its `\n` (and `\r\n`), or `null` at end of stream.
   *
   * @throws {LineTooLongError} when a line exceeds `maxLine`.
   * @throws {TruncatedLineError} with `requireNewline`, when the stream ends
   *   in the middle of a line.
   */
  readLine(): Promise<Uint8Array | null> {
    // Not an `async` function, on purpose: an idle connection waits here, and
    // every suspended async frame costs it memory.
    try {
      const line = this.#takeLine();
      if (line !== undefined) return Promise.resolve(line);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#error !== undefined) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
      this.#read();
    });
  }

  /**
   * The next line if a whole one is already buffered, else `null`; never reads.
   *
   * @throws {LineTooLongError} when that line exceeds `maxLine`.
   */
  readBufferedLine(): Uint8Array | null {
    const newline = findNewline(this.#buf, this.#words, this.#scanned, this.#end);
    if (newline === -1) {
      this.#scanned = this.#end;
      return null;
    }
    const start = this.#start;
    this.#start = this.#scanned = newline + 1;
    return this.#cut(start, newline);
  }

  /**
   * Every whole line that has arrived (at least one, waiting for it if need
   * be), or `null` at end of stream: the lines a client sent together come
   * out together, so that a server can answer them with one write. Iterate
   * over them before the next read (each is taken from the buffer as the
   * iteration reaches it). A line over the limit ends the iteration, and is
   * a {@linkcode LineTooLongError} from the next call, after the lines
   * before it.
   */
  readBatch(): Promise<Iterable<Uint8Array> | null> {
    const tooLong = this.#tooLong;
    if (tooLong !== undefined) {
      this.#tooLong = undefined;
      return Promise.reject(tooLong);
    }
    // Not readLine().then(...): an idle connection waits here, and a chained
    // promise would cost it memory.
    try {
      const line = this.#takeLine();
      if (line !== undefined) return Promise.resolve(line && this.#batchFrom(line));
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#error !== undefined) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve: (line) => resolve(line && this.#batchFrom(line)), reject };
      this.#read();
    });
  }

  /**
   * `first` and every whole line buffered after it, one at a time. Not an
   * array: a busy server's batches hold thousands of lines, and an array
   * would keep each one alive until the next batch (their garbage, kept for
   * 100 clients at once, doubled a flood's cost). Not a generator either:
   * this plain iterator, which reuses its one result object, made a flood of
   * sensor_server 1.17x faster (82 against 70 MB/s of pongs, flood.c closed).
   */
  #batchFrom(first: Uint8Array): Iterable<Uint8Array> {
    let pending: Uint8Array | null = first;
    const result: IteratorResult<Uint8Array> = { done: false, value: first };
    const done: IteratorResult<Uint8Array> = { done: true, value: undefined };
    const iterator: Iterator<Uint8Array> & Iterable<Uint8Array> = {
      next: () => {
        if (pending !== null) {
          result.value = pending;
          pending = null;
          return result;
        }
        let line: Uint8Array | null;
        try {
          line = this.readBufferedLine();
        } catch (err) {
          this.#tooLong = err; // thrown by the next call, once the lines before it are answered
          return done;
        }
        if (line === null) return done;
        result.value = line;
        return result;
      },
      [Symbol.iterator]: () => iterator,
    };
    return iterator;
  }

  /** Iterates over the lines until end of stream. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (let line = await this.readLine(); line !== null; line = await this.readLine()) {
      yield line;
    }
  }

  /** Stops reading: a waiting `readLine()` returns `null`, and so does every later one. */
  close(): void {
    this.#eof = true;
    this.#start = this.#scanned = this.#end; // a half-received line is not a line
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.resolve(null);
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
    this.#start = this.#scanned = this.#end;
    if (this.#requireNewline) throw new TruncatedLineError(this.#buf.slice(start, this.#end));
    return this.#cut(start, this.#end);
  }

  /** The line in `[start, end)`, without a trailing `\r`, checked against the limit. */
  #cut(start: number, end: number): Uint8Array {
    if (end > start && this.#buf[end - 1] === CARRIAGE_RETURN) end--;
    if (end - start > this.#maxLine) throw new LineTooLongError(this.#maxLine);
    return this.#buf.subarray(start, end);
  }

  /** Starts a read for the waiter, unless one is in flight already. */
  #read(): void {
    if (this.#reading) return; // (a waiter abandoned by its caller left it running)
    this.#makeRoom();
    this.#reading = true;
    if (this.#buf.length > SMALL_BUFFER) bigReads.set(this, pollsSoFar());
    this.#reader.read(this.#buf.subarray(this.#end)).then(this.#onRead, this.#onReadError);
  }

  // Made once per reader and passed to then(): no closure, no chained promise per read.
  #onRead = (n: number | null): void => {
    this.#reading = false;
    bigReads.delete(this);
    if (this.#eof) return; // stopped meanwhile: these bytes are not wanted
    if (n === null) this.#eof = true;
    else this.#filled(n);
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    let line: Uint8Array | null | undefined;
    try {
      line = this.#takeLine();
    } catch (err) {
      this.#waiter = undefined;
      return waiter.reject(err);
    }
    if (line === undefined) return this.#read(); // no whole line yet
    this.#waiter = undefined;
    waiter.resolve(line);
  };

  #onReadError = (err: unknown): void => {
    this.#reading = false;
    bigReads.delete(this);
    this.#error = err; // every later readLine() fails the same way
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(err);
  };

  #filled(n: number): void {
    this.#lastFilled = this.#end + n === this.#buf.length;
    this.#end += n;
    // A read that filled all the room suggests a burst: read bigger next time
    // (at once as big as the last burst needed).
    if (this.#lastFilled && this.#buf.length < LARGE_BUFFER) {
      this.#peak = Math.min(Math.max(this.#buf.length * 4, this.#peak), LARGE_BUFFER);
      this.#resize(this.#peak);
    }
  }

  /** Ensures free space after #end, keeping the buffer no bigger than needed. */
  #makeRoom(): void {
    const pending = this.#end - this.#start;
    if (
      this.#buf.length > SMALL_BUFFER && pending <= SMALL_BUFFER / 2 &&
      waitingBig() >= MAX_WAITING_BIG
    ) {
      // This read may wait for a long time (the peer may have paused). Unless
      // it is one of the few busiest, a connection waits with a small buffer,
      // whatever its last burst needed (a burst grows it again at once).
      this.#resize(SMALL_BUFFER);
    } else if (pending === 0) {
      this.#start = this.#end = this.#scanned = 0; // every byte was handed out: start again at the front
    } else if (this.#end === this.#buf.length) {
      // Full. Move the unfinished line to the front; if it fills half the
      // buffer, grow (in whole words, never past what the limit allows).
      if (pending < this.#buf.length / 2) return this.#resize(this.#buf.length);
      const cap = Math.max(Math.ceil((this.#maxLine + 2) / 4) * 4, LARGE_BUFFER);
      this.#resize(Math.min(this.#buf.length * 2, cap));
    }
  }

  #resize(size: number): void {
    const keep = this.#buf.subarray(this.#start, this.#end);
    if (size === this.#buf.length) this.#buf.copyWithin(0, this.#start, this.#end);
    else {
      const old = this.#buf;
      this.#buf = borrow(size);
      this.#buf.set(keep);
      giveBack(old);
      this.#words = size > SMALL_BUFFER
        ? new Uint32Array(this.#buf.buffer, this.#buf.byteOffset, size / 4)
        : undefined;
    }
    this.#scanned -= this.#start;
    this.#end -= this.#start;
    this.#start = 0;
  }
}
