/**
 * What a line server of many clients needs, and a one-client script can leave behind: one write
 * per batch of replies ({@linkcode ReplyBatch}), a line reader for thousands of clients
 * ({@linkcode BatchLineReader}), the line servers' flags. socket_server uses it too, so that
 * lesson 5's diff stays one `await` and a cap. Fairness, `nextPoll`, is in fairness.ts.
 *
 * @example In each client's loop of a server
 * ```ts ignore
 * for (let batch = await lines.readBatch(); batch !== null; batch = await lines.readBatch()) {
 *   for (const line of batch) replies.add(OK, line, NEWLINE);
 *   await replies.send(); // one write answers them all
 *   await nextPoll(); // fairness.ts: the others get their turn before this one is read again
 * }
 * ```
 *
 * @module
 */

import { LineTooLongError, TruncatedLineError, writeAll } from "./io.ts";
import type { LineReaderOptions, Reader, Writer } from "./io.ts";
import { pollCount } from "./fairness.ts";
import { MAX_LINE_LIMIT } from "./server.ts";
import { TRACE_FLAG } from "./trace.ts";

/** The flags every line server shares, with the script's own port and idle timeout. */
export function lineServerFlags(port: number, idleTimeout: number): LineServerFlags {
  const host = "address to listen on (0.0.0.0 or :: to expose it)";
  const idle = "drop a client that neither completes a line nor takes a byte of its replies " +
    "for this long (0: never)";
  const maxLine = "longest line in bytes; longer gets 'ERR line too long'";
  return {
    host: { kind: "host", default: "127.0.0.1", help: host },
    port: { kind: "port", short: "p", default: port, help: "TCP port, 0 for any free one" },
    "idle-timeout": { kind: "seconds", default: idleTimeout, help: idle },
    "max-line": { kind: "integer", min: 1, max: MAX_LINE_LIMIT, default: 64 * 1024, help: maxLine },
    trace: TRACE_FLAG,
  };
}

/** The flag specs of {@linkcode lineServerFlags}. */
export type LineServerFlags = {
  host: { kind: "host"; default: string; help: string };
  port: { kind: "port"; short: string; default: number; help: string };
  "idle-timeout": { kind: "seconds"; default: number; help: string };
  "max-line": { kind: "integer"; min: number; max: number; default: number; help: string };
  trace: { kind: "boolean"; help: string };
};

/**
 * Batches are built in buffers that all clients share, lent while a batch is built and written:
 * one kept by each client stays while it idles (186 KiB after a 60 KB line). Sizes are powers of
 * two from 256 bytes (ping-pong) to 128 KiB (a pipelining client), each pooled up to 256 KiB in
 * all (8 at least): a 300-byte reply borrows 512 bytes, not 128 KiB, when many are in flight.
 */
const OUT_SMALL = 256;
const OUT_BIG = 128 * 1024;
const NO_BYTES = new Uint8Array(0);
const spare = new Map<number, Uint8Array[]>();

function borrowOut(size: number): Uint8Array {
  const pooled = size <= OUT_SMALL
    ? OUT_SMALL
    : size > OUT_BIG
    ? size
    : 2 ** Math.ceil(Math.log2(size));
  return spare.get(pooled)?.pop() ?? new Uint8Array(pooled);
}

function giveBackOut(buffer: Uint8Array): void {
  const size = buffer.length;
  if (size > OUT_BIG) return;
  const pool = spare.get(size) ?? spare.set(size, []).get(size)!;
  if (pool.length < Math.max(8, (256 * 1024) / size)) pool.push(buffer);
}

/** Collects replies and sends them with one `write()`: one trip into the kernel for a batch. */
export class ReplyBatch {
  readonly #conn: Writer;
  readonly #progress: { restart(): void } | undefined;
  #out: Uint8Array = NO_BYTES;
  #size = 0;
  /** Replies go to `conn`; each write that gets bytes out restarts `progress` (see `writeAll`). */
  constructor(conn: Writer, progress?: { restart(): void }) {
    this.#conn = conn;
    this.#progress = progress;
  }

  /** Appends one reply of up to three parts (not `...parts`: an array per line cost a flood 6%). */
  add(first: Uint8Array, second?: Uint8Array, third?: Uint8Array): void {
    this.#append(first);
    if (second !== undefined) this.#append(second);
    if (third !== undefined) this.#append(third);
  }

  #append(part: Uint8Array): void {
    const n = part.length;
    if (this.#size + n > this.#out.length) this.#grow(this.#size + n);
    if (n > 16) this.#out.set(part, this.#size);
    else for (let i = 0; i < n; i++) this.#out[this.#size + i] = part[i]; // a prefix, a newline
    this.#size += n;
  }

  /** Writes the batch in full, then empties it. */
  async send(): Promise<void> {
    const out = this.#out, size = this.#size;
    if (size === 0) return;
    this.#out = NO_BYTES; // what is added during the write starts a new batch
    this.#size = 0;
    try {
      await writeAll(this.#conn, out.subarray(0, size), this.#progress);
    } finally {
      giveBackOut(out); // free for another client (kept by each: 186 KiB after a 60 KB line)
    }
  }

  #grow(needed: number): void {
    // ×8: a pipelining client's batch reaches 128 KiB in three copies, not nine.
    const next = borrowOut(this.#size === 0 ? needed : Math.max(needed, this.#out.length * 8));
    next.set(this.#out.subarray(0, this.#size));
    if (this.#out !== NO_BYTES) giveBackOut(this.#out);
    this.#out = next;
  }
}

/** An idle reader holds this much buffer; it grows only for long lines or bursts. */
const SMALL = 256;
const LARGE = 64 * 1024;
const CARRIAGE_RETURN = 0x0d;
const NEWLINE = 0x0a;
/**
 * Buffers bigger than SMALL are lent by a pool that all readers share: 1,000 clients that each
 * sent one long line then reuse a few, instead of leaving 189 KiB each to the garbage collector.
 */
const pool = new Map<number, Uint8Array<ArrayBuffer>[]>();
const MAX_POOLED = 8; // buffers of each size
/**
 * At most this many reads wait with a big buffer (the busiest: a 256-byte first read cost a
 * flood 15%), the others with a small one, so that clients that sent a burst and went quiet hold
 * 1 MiB at most (16, not 32: 18.3 instead of 20.0 KiB a client after a 60 KB line).
 */
const MAX_WAITING_BIG = 16;
/** Readers with a read in flight into a big buffer, and the poll count when it started. */
const bigReads = new Map<object, number>();
/** A read still pending after this many polls is waiting, not taking a flood's bytes. */
const WAITING_AFTER_POLLS = 3;
/**
 * The big buffers are cut from one 1 MiB block, made on first need: allocated one by one among
 * everything else, they left memory around them unusable (43 instead of 18 KiB a client).
 */
let block: Uint8Array<ArrayBuffer>[] | undefined;
const BLOCK_BYTES = MAX_WAITING_BIG * LARGE;

/** How many big reads have been waiting (up to MAX_WAITING_BIG: no need to count further). */
function waitingBig(): number {
  let n = 0;
  for (const since of bigReads.values()) {
    if (pollCount() > since + WAITING_AFTER_POLLS) n++;
    if (n === MAX_WAITING_BIG) break;
  }
  return n;
}

function borrow(size: number): Uint8Array<ArrayBuffer> {
  if (size === LARGE) {
    if (block === undefined) {
      const memory = new ArrayBuffer(BLOCK_BYTES);
      block = Array.from(
        { length: MAX_WAITING_BIG },
        (_, i) => new Uint8Array(memory, i * LARGE, LARGE),
      );
    }
    const cut = block.pop();
    if (cut) return cut;
  }
  return pool.get(size)?.pop() ?? new Uint8Array(size);
}

function giveBack(buffer: Uint8Array<ArrayBuffer>): void {
  if (buffer.buffer.byteLength === BLOCK_BYTES) {
    block!.push(buffer);
    return;
  }
  if (buffer.length <= SMALL || buffer.length > LARGE) return;
  const spare = pool.get(buffer.length);
  if (spare === undefined) pool.set(buffer.length, [buffer]);
  else if (spare.length < MAX_POOLED) spare.push(buffer);
}

/** `LineReader` (io.ts) made cheap for thousands of clients; `readBatch()`: one write a batch. */
export class BatchLineReader {
  readonly #reader: Reader;
  readonly #maxLine: number;
  readonly #requireNewline: boolean;
  #buf = new Uint8Array(SMALL);
  #words: Uint32Array | undefined; // the same bytes as words, for findNewline, once it grows
  #start = 0; // first byte not yet handed out
  #end = 0; // one past the last byte read
  #scanned = 0; // [#start, #scanned) holds no newline
  #eof = false; // the peer closed (or we stopped)
  #reading = false; // a read is in flight
  #error: unknown; // the read error, once one happened
  #tooLong: unknown; // a line over the limit, found while batching the lines before it
  #lastFilled = false; // the last read filled all the room it had: more may be waiting
  #peak = SMALL; // the size a burst grew the buffer to
  #waiter: { resolve: (line: Uint8Array | null) => void; reject: (e: unknown) => void } | undefined;
  /** Reads lines from `reader` (a `Deno.Conn`, `Deno.stdin`, ...). */
  constructor(reader: Reader, options: LineReaderOptions = {}) {
    this.#reader = reader;
    this.#maxLine = options.maxLine ?? 64 * 1024;
    this.#requireNewline = options.requireNewline ?? false;
    if (options.signal?.aborted) this.close();
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  /** The next line, or `null` at end of stream (the rules of `LineReader.readLine`). */
  readLine(): Promise<Uint8Array | null> { // not async: an idle client must hold no async frame
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

  /** The next line if a whole one is buffered, else `null`; never reads. */
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

  /** Every whole line that arrived (iterate before the next call), or `null` at end of stream. */
  readBatch(): Promise<Iterable<Uint8Array> | null> {
    const tooLong = this.#tooLong; // a line over the limit ended the last batch: throw it now
    if (tooLong !== undefined) {
      this.#tooLong = undefined;
      return Promise.reject(tooLong);
    }
    try { // not readLine().then(...): an idle client must hold no chained promise
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

  #batchFrom(first: Uint8Array): Iterable<Uint8Array> { // not an array or generator: flood 1.17x
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
    for (let line = await this.readLine(); line !== null; line = await this.readLine()) yield line;
  }

  /** Stops reading: a waiting `readLine()` returns `null`, and so does every later one. */
  close(): void {
    this.#eof = true;
    this.#start = this.#scanned = this.#end; // a half-received line is not a line
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.resolve(null);
  }

  #takeLine(): Uint8Array | null | undefined { // undefined: more bytes; maxLine + 1: `\r` may come
    const line = this.readBufferedLine();
    if (line !== null) return line;
    if (this.#end - this.#start > this.#maxLine + 1) throw new LineTooLongError(this.#maxLine);
    if (!this.#eof) return undefined;
    if (this.#start === this.#end) return null;
    const start = this.#start; // the stream ended after an unfinished line: a line all the same
    this.#start = this.#scanned = this.#end;
    if (this.#requireNewline) throw new TruncatedLineError(this.#buf.slice(start, this.#end));
    return this.#cut(start, this.#end);
  }

  #cut(start: number, end: number): Uint8Array {
    if (end > start && this.#buf[end - 1] === CARRIAGE_RETURN) end--;
    if (end - start > this.#maxLine) throw new LineTooLongError(this.#maxLine);
    return this.#buf.subarray(start, end);
  }

  #read(): void {
    if (this.#reading) return; // (a waiter abandoned by its caller left it running)
    this.#makeRoom();
    this.#reading = true;
    if (this.#buf.length > SMALL) bigReads.set(this, pollCount());
    this.#reader.read(this.#buf.subarray(this.#end)).then(this.#onRead, this.#onReadError);
  }

  #onRead = (n: number | null): void => { // made once per reader: no closure per read
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
    if (this.#lastFilled && this.#buf.length < LARGE) { // a burst: read bigger, as big as the last
      this.#peak = Math.min(Math.max(this.#buf.length * 4, this.#peak), LARGE);
      this.#resize(this.#peak);
    }
  }

  #makeRoom(): void {
    const pending = this.#end - this.#start;
    if (this.#buf.length > SMALL && pending <= SMALL / 2 && waitingBig() >= MAX_WAITING_BIG) {
      this.#resize(SMALL); // this read may wait long (a paused peer): wait with a small buffer
    } else if (pending === 0) {
      this.#start = this.#end = this.#scanned = 0; // all handed out: start again at the front
    } else if (this.#end === this.#buf.length) { // full: move the line to the front, or grow
      if (pending < this.#buf.length / 2) return this.#resize(this.#buf.length);
      const cap = Math.max(Math.ceil((this.#maxLine + 2) / 4) * 4, LARGE); // whole words, the limit
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
      this.#words = size > SMALL
        ? new Uint32Array(this.#buf.buffer, this.#buf.byteOffset, size / 4)
        : undefined;
    }
    this.#scanned -= this.#start;
    this.#end -= this.#start;
    this.#start = 0;
  }
}

/** The first `\n` in `bytes[from, to)` or -1, four bytes at a time over `words` (same memory). */
export function findNewline(
  bytes: Uint8Array,
  words: Uint32Array | undefined,
  from: number,
  to: number,
): number {
  if (words === undefined) { // with indexOf only, the bench's floods ran at 0.60-0.91x
    const found = bytes.indexOf(NEWLINE, from);
    return found < to ? found : -1;
  }
  let i = from;
  for (; i < to && (i & 3) !== 0; i++) if (bytes[i] === NEWLINE) return i;
  for (let w = i >> 2, last = to >> 2; w < last; w++) {
    const x = words[w] ^ 0x0a0a0a0a; // a `\n` byte is a zero byte of x, which the test below finds
    if (((x - 0x01010101) & ~x & 0x80808080) !== 0) break; // a newline in this word
    i = (w + 1) << 2;
  }
  for (; i < to; i++) if (bytes[i] === NEWLINE) return i;
  return -1;
}
