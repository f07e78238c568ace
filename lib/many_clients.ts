/**
 * What a server of many clients needs, and a one-client script can leave
 * behind: fairness ({@linkcode nextPoll}: one read per client per poll of the
 * kernel), fewer writes ({@linkcode ReplyBatch}: one write answers every line
 * that came together), a line reader for thousands of clients
 * ({@linkcode BatchLineReader}), and the flags every line server shares
 * ({@linkcode lineServerFlags}). socket_server uses it too, so that lesson
 * 5's diff stays one `await` and a cap.
 *
 * @example In each client's loop of a server
 * ```ts ignore
 * import { BatchLineReader, nextPoll, ReplyBatch } from "./many_clients.ts";
 * const lines = new BatchLineReader(conn);
 * const replies = new ReplyBatch(conn);
 * for (let batch = await lines.readBatch(); batch !== null; batch = await lines.readBatch()) {
 *   for (const line of batch) replies.add(OK, line, NEWLINE);
 *   await replies.send(); // one write answers them all
 *   await nextPoll(); // the other clients get their turn before this one is read again
 * }
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers";
import {
  closeQuietly,
  LineReaderOptions,
  LineTooLongError,
  type Reader,
  TruncatedLineError,
  writeAll,
  type Writer,
} from "./io.ts";
import { logError, waitForLogReader } from "./log.ts";
import { MAX_LINE_LIMIT } from "./server.ts";
import { TRACE_FLAG } from "./trace.ts";

/**
 * The flags every line server shares: `--host`, `--port`, `--idle-timeout`,
 * `--max-line` (64 KiB) and `--trace`, with the script's own port and timeout.
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

/** The flag specs of {@linkcode lineServerFlags}. */
export type LineServerFlags = {
  host: { kind: "host"; default: string; help: string };
  port: { kind: "port"; short: string; default: number; help: string };
  "idle-timeout": { kind: "seconds"; default: number; help: string };
  "max-line": { kind: "integer"; min: number; max: number; default: number; help: string };
  trace: typeof TRACE_FLAG;
};

/** Resolves once the event loop has run again (`setImmediate`): for a client that waits on one thing. */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** How many polls `nextPoll` has waited for: has a read waited through a whole one? */
let polls = 0;

/**
 * Resolves after Deno has next asked the kernel which sockets are ready: the
 * fairness step. A read whose bytes are there already completes without that
 * question, so while some client always has bytes waiting, a client whose
 * bytes arrived since the last poll is never noticed (a probe among 100
 * flooding clients waited 1.3 s). So each client gets one read per poll: after
 * answering a batch, it awaits `nextPoll()`. How: a loopback connection to
 * ourselves (the self-pipe trick): a read on its empty end completes only at
 * the next poll. `setImmediate` does not poll. Without permission for a
 * loopback address it says so once and falls back to `setImmediate`.
 */
export function nextPoll(): Promise<void> {
  return polled ??= poll();
}

/** The wait that the clients of this turn share, until the poll it waits for. */
let polled: Promise<void> | undefined;
/** Both ends of the loopback pair, once it is open; `null` when we may not open one. */
let selfPipe: Promise<SelfPipe | null> | undefined;
/** After a failed open (out of file descriptors, say): when to try again. */
let retryAt = 0;
/** Whether the program was told that fairness is off for now (said once per episode). */
let toldFailure = false;
/** No loopback address may be used without a permission prompt: no pair, ever. */
let forbidden = false;
type SelfPipe = { reader: Deno.TcpConn; writer: Deno.TcpConn };
const ONE_BYTE = new Uint8Array(1);
const DRAIN = new Uint8Array(64);

async function poll(): Promise<void> {
  try {
    await waitForLogReader(); // the log's reader is one more to take turns with
    if (selfPipe === undefined && performance.now() < retryAt) return await nextTurn();
    const pipe = await (selfPipe ??= openSelfPipe());
    if (pipe === null) {
      if (!forbidden) selfPipe = undefined; // it failed for now: try again after retryAt
      return await nextTurn();
    }
    pipe.reader.ref(); // while someone waits on it, the read keeps the program alive
    const arrived = pipe.reader.read(DRAIN); // pending: the socket is empty
    arrived.catch(() => {}); // (a failure is handled below, whichever call sees it first)
    try {
      await pipe.writer.write(ONE_BYTE); // arrives now, but the read hears of it at the next poll
      if ((await arrived) === null) throw new Error("closed");
      pipe.reader.unref();
    } catch {
      // Reset or closed under us: forget the pair (the next poll opens another).
      closeQuietly(pipe.reader);
      closeQuietly(pipe.writer);
      selfPipe = undefined;
      await nextTurn();
    }
  } finally {
    polls++;
    polled = undefined;
  }
}

/** Opens the pair on the first loopback address we may use without a prompt; checks the accepted end is ours. */
async function openSelfPipe(): Promise<SelfPipe | null> {
  let permitted = false;
  let failure: unknown;
  for (const hostname of ["127.0.0.1", "::1", "0.0.0.0", "::"]) {
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    if (Deno.permissions.querySync({ name: "net", host }).state !== "granted") continue;
    permitted = true;
    try {
      const listener = Deno.listen({ hostname, port: 0 });
      try {
        const writer = await Deno.connect({ hostname, port: listener.addr.port });
        for (let tries = 0; tries < 10; tries++) {
          const reader = await listener.accept();
          if (reader.remoteAddr.port === writer.localAddr.port) {
            // Between polls the pair must not keep a program alive that is otherwise done.
            reader.unref();
            writer.unref();
            if (toldFailure) logError("note: nextPoll works again: every client gets its turn");
            toldFailure = false;
            return { reader, writer };
          }
          reader.close(); // not ours
        }
        writer.close();
      } finally {
        listener.close();
      }
    } catch (err) {
      failure = err; // this address is not there (no IPv6, say), or no file descriptor is left
    }
  }
  if (!permitted) {
    logError(
      "note: no permission for a loopback connection (--allow-net=127.0.0.1): " +
        "a busy client may now delay the others (see nextPoll in lib/many_clients.ts)",
    );
    forbidden = true; // for good: asking would stop the program at a prompt
    return null;
  }
  // Out of file descriptors, say: take turns without a poll for now, and try again in a second.
  if (!toldFailure) {
    logError(
      `note: nextPoll cannot open its loopback connection (${(failure as Error)?.message}): ` +
        "a busy client may delay the others until it can (see lib/many_clients.ts)",
    );
  }
  toldFailure = true;
  retryAt = performance.now() + 1000;
  return null;
}

/**
 * Batches are built in buffers that all clients share, lent while a batch is
 * built and written: a fresh buffer per reply cost as much as the rest of a
 * round trip, and one kept by each client stays while it idles (186 KiB after
 * a 60 KB line). 256 bytes (ping-pong) or 128 KiB (a pipelining client).
 */
const SMALL = 256;
const BIG = 128 * 1024;
const spare = new Map<number, Uint8Array[]>([[SMALL, []], [BIG, []]]);
const MAX_SPARE = new Map([[SMALL, 1024], [BIG, 8]]);
const NO_BYTES = new Uint8Array(0);

/** A buffer of at least `size` bytes: from a pool when one fits. */
function borrowReplyBuffer(size: number): Uint8Array {
  const pooled = size <= SMALL ? SMALL : size <= BIG ? BIG : size;
  return spare.get(pooled)?.pop() ?? new Uint8Array(pooled);
}

/** Gives a buffer back to its pool (unless the pool is full, or it has none). */
function giveBackReplyBuffer(buffer: Uint8Array): void {
  const pool = spare.get(buffer.length);
  if (pool && pool.length < MAX_SPARE.get(buffer.length)!) pool.push(buffer);
}

/**
 * Collects replies and sends them with one `write()`: each write is a trip
 * into the kernel, as costly as building a small reply.
 *
 * @example Answer two lines that came together, with one write
 * ```ts
 * import { ReplyBatch } from "./many_clients.ts";
 * const conn = { write: (p: Uint8Array) => (console.log(new TextDecoder().decode(p)), Promise.resolve(p.length)) };
 * const replies = new ReplyBatch(conn);
 * const [OK, NL] = [new TextEncoder().encode("OK ... "), new TextEncoder().encode("\n")];
 * for (const line of ["one", "two"]) replies.add(OK, new TextEncoder().encode(line), NL);
 * await replies.send(); // "OK ... one\nOK ... two\n", in one write
 * ```
 */
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
    // Tiny parts (a prefix, a newline) are copied faster by hand than by set().
    if (n > 16) this.#out.set(part, this.#size);
    else for (let i = 0; i < n; i++) this.#out[this.#size + i] = part[i];
    this.#size += n;
  }

  /** Writes the batch in full, then empties it. */
  async send(): Promise<void> {
    const out = this.#out;
    const size = this.#size;
    if (size === 0) return;
    this.#out = NO_BYTES; // what is added during the write starts a new batch
    this.#size = 0;
    try {
      await writeAll(this.#conn, out.subarray(0, size), this.#progress);
    } finally {
      giveBackReplyBuffer(out); // its write is over: another connection may build in it
    }
  }

  #grow(needed: number): void {
    const next = borrowReplyBuffer(
      this.#size === 0 ? needed : Math.max(needed, this.#out.length * 2),
    );
    next.set(this.#out.subarray(0, this.#size));
    if (this.#out !== NO_BYTES) giveBackReplyBuffer(this.#out);
    this.#out = next;
  }
}

/** An idle connection costs this much buffer; it grows only for long lines or bursts. */
const SMALL_BUFFER = 256;
const LARGE_BUFFER = 64 * 1024;
const CARRIAGE_RETURN = 0x0d;

/** Buffers bigger than the small one are lent by a pool all readers share: 1,000 clients that each sent one long line reuse a few, instead of leaving 189 KiB each to the garbage collector. */
const pool = new Map<number, Uint8Array<ArrayBuffer>[]>();
/**
 * At most this many readers wait for a read with a big buffer (1 MiB in all):
 * the busiest, which a 256-byte first read would slow (a flood lost 15%).
 * The others wait with a small one, so that clients that sent a burst and
 * went quiet hold 1 MiB at most (with 16, not 32: 18.3 instead of 20.0 KiB a
 * client after a 60 KB line, `deno task bench --only '60 KB'`). Waiting: a
 * whole poll came and went (`pollsSoFar`); a flood's reads complete at once.
 */
const MAX_WAITING_BIG = 16;
/** Readers with a read in flight into a big buffer, and the poll count when it started. */
const bigReads = new Map<object, number>();

/** How many big reads have been waiting (up to MAX_WAITING_BIG: no need to count further). */
function waitingBig(): number {
  const now = polls;
  let n = 0;
  for (const since of bigReads.values()) {
    if (now > since + 3 && ++n === MAX_WAITING_BIG) break;
  }
  return n;
}
const MAX_POOLED = 8; // buffers of each size
/** The busiest readers' buffers are cut from one 1 MiB block: allocated one by one among everything else, they left memory around them unusable (43 instead of 18 KiB a client after a burst). */
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

/**
 * The line reader of a server of many clients: `LineReader` (io.ts) made
 * cheap for thousands of clients and fast for floods. `readBatch()` gives
 * every whole line that arrived together, so one write can answer them; an
 * idle client holds a 256-byte buffer and no suspended async frame; bigger
 * buffers come from shared pools; the newline search goes four bytes at a
 * time (`findNewline`). The same rules as `LineReader` otherwise.
 *
 * @example
 * ```ts
 * import { BatchLineReader } from "./many_clients.ts";
 * const bytes = new TextEncoder().encode("a\nb\r\nc"); // arrives in one read
 * let sent = false;
 * const source = {
 *   read: (p: Uint8Array) => Promise.resolve(sent ? null : (p.set(bytes), sent = true, bytes.length)),
 * };
 * const lines = new BatchLineReader(source);
 * for (let batch = await lines.readBatch(); batch !== null; batch = await lines.readBatch()) {
 *   console.log([...batch].map((line) => new TextDecoder().decode(line)));
 * }
 * // [ "a", "b", "c" ]
 * ```
 */
export class BatchLineReader {
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
    this.#maxLine = options.maxLine ?? 64 * 1024;
    this.#requireNewline = options.requireNewline ?? false;
    if (options.signal?.aborted) this.close();
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  /** The next line, or `null` at end of stream (the rules of `LineReader.readLine`). */
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

  /**
   * Every whole line that has arrived (waiting for one if need be), or `null`
   * at end of stream. Iterate over them before the next read. A line over the
   * limit ends the batch, and is thrown by the next call.
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
   * `first` and every whole line buffered after it. Not an array (a flood's
   * batches hold thousands of lines), nor a generator: this iterator, which
   * reuses its result object, made sensor_server's flood 1.17x faster.
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
    if (this.#buf.length > SMALL_BUFFER) bigReads.set(this, polls);
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

const NEWLINE = 0x0a;

/**
 * Speed part: the first `\n` in `bytes[from, to)`, or -1, four bytes at a
 * time over `words` (a `Uint32Array` on the same memory; `undefined`: use
 * `indexOf`). A word holds a `\n` when `x = word ^ 0x0a0a0a0a` holds a zero
 * byte, which `(x - 0x01010101) & ~x & 0x80808080` detects. With `indexOf`
 * instead, the bench's floods ran at 0.60-0.91x (2026-12-03).
 */
export function findNewline(
  bytes: Uint8Array,
  words: Uint32Array | undefined,
  from: number,
  to: number,
): number {
  if (words === undefined) {
    const found = bytes.indexOf(NEWLINE, from);
    return found < to ? found : -1;
  }
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
