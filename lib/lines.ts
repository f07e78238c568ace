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
  concatBytes,
  type Reader,
  type ReadOptions,
  ReadTimeoutError,
  writeAll,
  type Writer,
} from "./io.ts";

/** 64 KiB: the longest line a server accepts unless told otherwise. */
export const DEFAULT_MAX_LINE = 64 * 1024;

/** Whoever waits for the read in flight. */
type Waiter = { resolve: (n: number | null) => void; reject: (e: unknown) => void };

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;
/** An idle connection costs this much buffer; it grows only for long lines or bursts. */
const SMALL_BUFFER = 1024;
const LARGE_BUFFER = 64 * 1024;

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

/** Options for {@linkcode LineReader}. */
export interface LineReaderOptions extends ReadOptions {
  /** Longest line accepted, in bytes, not counting `\r\n`. Default 64 KiB. */
  maxLine?: number;
}

/**
 * Splits a byte stream into lines, however the bytes arrive.
 *
 * A line returned by {@linkcode LineReader.readLine} is a view into the
 * reader's buffer: use it (write it, decode it) before the next call, or copy
 * it with `line.slice()` to keep it.
 *
 * At end of stream, bytes after the last `\n` are returned as a final line, as
 * Go's `bufio.Scanner` and Python's `readline()` do.
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
  readonly #options: ReadOptions;
  readonly #maxLine: number;
  #buf = new Uint8Array(SMALL_BUFFER);
  #start = 0; // first byte not yet handed out
  #end = 0; // one past the last byte read
  #scanned = 0; // [#start, #scanned) is known to hold no newline
  #eof = false;
  #pending: Promise<number | null> | undefined;
  #lastRead = 0;
  // The idle timeout is one watchdog timer per reader, not one per read: a
  // timer per read would cost more than the read itself on a busy connection.
  #waiter: Waiter | undefined;
  #readStarted = 0;
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  #abortHooked = false;

  /** Reads lines from `reader` (a `Deno.Conn`, `Deno.stdin`, ...). */
  constructor(reader: Reader, options: LineReaderOptions = {}) {
    this.#reader = reader;
    this.#maxLine = options.maxLine ?? DEFAULT_MAX_LINE;
    this.#options = { timeoutMs: options.timeoutMs, signal: options.signal };
  }

  /**
   * True when {@linkcode LineReader.readLine} can return a line from bytes
   * already read, without waiting on the network. A server uses it to send
   * the replies to a whole batch of lines in one write.
   */
  hasBufferedLine(): boolean {
    return this.#findNewline() !== -1 || (this.#eof && this.#start < this.#end);
  }

  /**
   * The next line, without its `\n` (and `\r\n`), or `null` at end of stream
   * (or when the `signal` option aborts).
   *
   * @throws {LineTooLongError} when a line exceeds `maxLine`.
   * @throws {ReadTimeoutError} when `timeoutMs` passes without a byte. The
   *   reader stays usable: call `readLine()` again to keep waiting, and bytes
   *   that arrive late are not lost.
   */
  async readLine(): Promise<Uint8Array | null> {
    while (true) {
      const line = this.readBufferedLine();
      if (line !== null) return line;
      // No newline yet: `\r` may still come, so allow one byte for it.
      if (this.#end - this.#start > this.#maxLine + 1) {
        throw new LineTooLongError(this.#maxLine);
      }
      if (this.#eof) {
        if (this.#start === this.#end) return null;
        const last = this.#buf.subarray(this.#start, this.#end);
        this.#start = this.#scanned = this.#end;
        return last;
      }
      await this.#fill();
    }
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
    const found = this.#buf.subarray(this.#scanned, this.#end).indexOf(NEWLINE);
    if (found === -1) {
      this.#scanned = this.#end;
      return -1;
    }
    return this.#scanned + found;
  }

  async #fill(): Promise<void> {
    // A read that outlived an earlier timeout is still filling our buffer:
    // wait for it rather than start another, so no byte is lost or reordered.
    if (this.#pending === undefined) {
      this.#makeRoom();
      this.#pending = this.#reader.read(this.#buf.subarray(this.#end));
    }
    const n = this.#options.timeoutMs === undefined && this.#options.signal === undefined
      ? await this.#pending
      : await this.#waitForRead(this.#pending);
    this.#pending = undefined;
    if (n === null) {
      this.#eof = true;
      // Stopped by the signal, not by the peer: a half-received line is not a line.
      if (this.#options.signal?.aborted) this.#start = this.#scanned = this.#end;
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
   * Stops the idle-timeout timer. Call it when done with a reader that has a
   * `timeoutMs` before reaching end of stream (end of stream stops it too).
   */
  close(): void {
    clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
  }

  /** Waits for `read`, or the idle timeout, or the abort signal, whichever is first. */
  #waitForRead(read: Promise<number | null>): Promise<number | null> {
    const { timeoutMs, signal } = this.#options;
    if (signal?.aborted) return Promise.resolve(null);
    return new Promise<number | null>((resolve, reject) => {
      this.#waiter = { resolve, reject };
      this.#readStarted = performance.now();
      const settle = (fn: (w: Waiter) => void) => {
        const waiter = this.#waiter;
        this.#waiter = undefined;
        if (waiter) fn(waiter);
      };
      read.then((n) => {
        if (n === null) this.close();
        settle((w) => w.resolve(n));
      }, (err) => {
        this.close();
        settle((w) => w.reject(err));
      });
      if (signal && !this.#abortHooked) {
        this.#abortHooked = true;
        signal.addEventListener("abort", () => {
          this.close();
          settle((w) => w.resolve(null));
        }, { once: true });
      }
      if (timeoutMs !== undefined && this.#watchdog === undefined) this.#arm(timeoutMs, timeoutMs);
    });
  }

  #arm(delay: number, timeoutMs: number): void {
    this.#watchdog = setTimeout(() => {
      this.#watchdog = undefined;
      if (this.#waiter === undefined) return; // not reading now: re-armed by the next read
      const waited = performance.now() - this.#readStarted;
      if (waited < timeoutMs) return this.#arm(timeoutMs - waited, timeoutMs);
      const waiter = this.#waiter;
      this.#waiter = undefined;
      waiter.reject(new ReadTimeoutError(timeoutMs));
    }, delay);
    // The watchdog alone must not keep a program alive.
    Deno.unrefTimer(this.#watchdog as unknown as number);
  }

  /** Ensures free space after #end, keeping the buffer no bigger than needed. */
  #makeRoom(): void {
    const pending = this.#end - this.#start;
    if (pending === 0 && this.#buf.length > SMALL_BUFFER && this.#lastRead < SMALL_BUFFER) {
      // Caught up with light traffic: an idle connection should cost little memory.
      this.#resize(SMALL_BUFFER);
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
    const cap = Math.max(this.#maxLine + 2, LARGE_BUFFER);
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
  }
}

const LINE_TOO_LONG = new TextEncoder().encode("ERR line too long\n");

/**
 * Answers every line of a connection with `reply(line)` until the peer is done.
 *
 * Replies to lines that arrived together go out in one `write()`, which is
 * what makes pipelined clients fast. A line over `maxLine` is answered with
 * `ERR line too long` and {@linkcode LineTooLongError} is thrown, so the
 * caller closes the connection. The line given to `reply` is a view into the
 * reader's buffer that stays valid until the batch is written; `reply` may
 * return it inside its parts without copying.
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
  conn: Reader & Writer,
  reply: (line: Uint8Array) => Uint8Array[],
  options: LineReaderOptions = {},
): Promise<void> {
  const lines = new LineReader(conn, options);
  const batch: Uint8Array[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const bytes = batch.length === 1 ? batch[0] : concatBytes(batch);
    batch.length = 0;
    await writeAll(conn, bytes);
  };
  try {
    while (true) {
      const first = await lines.readLine();
      if (first === null) break;
      for (const part of reply(first)) batch.push(part);
      // Every other line that came in the same read: answered without awaiting.
      for (let line = lines.readBufferedLine(); line !== null; line = lines.readBufferedLine()) {
        for (const part of reply(line)) batch.push(part);
      }
      await flush();
    }
  } catch (err) {
    if (err instanceof LineTooLongError) {
      batch.push(LINE_TOO_LONG);
      await flush();
    }
    throw err;
  } finally {
    lines.close();
  }
}
