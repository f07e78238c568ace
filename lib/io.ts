/**
 * Exact reads, complete writes and a line reader. TCP is a byte stream, not a message queue: one
 * `read()` returns whatever has arrived (1 byte or 10,000), and one `write()` may take only part of
 * what it was given. These loop until the job is done. A read cannot be cancelled: close the conn.
 *
 * @example Read a 4-byte header, then write a reply in full
 * ```ts
 * import { readExact, writeAll } from "./io.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using client = await Deno.connect({ port: listener.addr.port });
 * using server = await listener.accept(); // all three closed at the end of the scope
 * await writeAll(client, new Uint8Array([1, 2, 3, 4]));
 * console.log(await readExact(server, 4)); // Uint8Array(4) [ 1, 2, 3, 4 ]
 * ```
 *
 * @module
 */

import { plural } from "./text.ts";

/** Anything with Deno's `read(buffer)` (a `Deno.Conn`, `Deno.stdin`): `null` is end of stream. */
export type Reader = { read(p: Uint8Array): Promise<number | null> };
/** Anything with Deno's `write(bytes)`, which may write fewer bytes than given. */
export type Writer = { write(p: Uint8Array): Promise<number> };

/**
 * Reads exactly `n` bytes, however the network splits them.
 *
 * @throws {UnexpectedEofError} when the stream ends first.
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
 * Writes every byte: `write()` takes only part of a buffer when the kernel's send buffer is full.
 * With `progress` (an idle clock), each write that gets bytes out restarts it: a slow reader is not
 * an idle one.
 */
export async function writeAll(
  writer: Writer,
  bytes: Uint8Array,
  progress?: { restart(): void },
): Promise<void> {
  for (let written = 0; written < bytes.byteLength;) {
    written += await writer.write(bytes.subarray(written));
    progress?.restart();
  }
}

/** What stops a wait: an `AbortSignal`, or the lighter signal of `OpenClients.add` (server.ts). */
export interface StopSignal {
  /** True once it has aborted. */
  readonly aborted: boolean;
  /** Calls `listener` when it aborts. */
  addEventListener(type: "abort", listener: () => void, options: { once: true }): void;
}

/** Options for {@linkcode LineReader}. */
export interface LineReaderOptions {
  /** The longest line, in bytes, without its `\r\n`. Default 64 KiB. */
  maxLine?: number;
  /** A stream that ends mid-line is a {@linkcode TruncatedLineError} (for replies, which end in `\n`). */
  requireNewline?: boolean;
  /** When it aborts, a waiting `readLine()` returns `null`, as if the peer had closed. */
  signal?: StopSignal;
}

/**
 * Splits a byte stream into lines, however the bytes arrive: the peer's raw bytes without the `\n`
 * (or `\r\n`), `null` at end of stream, where bytes after the last `\n` are a last line. A line
 * is a view into the buffer, good until the next call. It uses `read()`, not `conn.readable`, which
 * closes the whole conn at end of stream: a client that half-closed still gets replies.
 *
 * @example Every line typed (or piped) into the program
 * ```ts ignore
 * import { LineReader } from "./io.ts";
 * for await (const line of new LineReader(Deno.stdin)) console.log(line.length); // or a Deno.Conn
 * ```
 */
export class LineReader {
  readonly #reader: Reader;
  readonly #maxLine: number;
  readonly #requireNewline: boolean;
  #buf = new Uint8Array(256); // grows with a long line, up to the limit
  #start = 0; // the first byte not handed out
  #end = 0; // one past the last byte read
  #scanned = 0; // [#start, #scanned) holds no newline
  #eof = false;
  #error: unknown;
  #wake: ((n: null) => void) | undefined; // ends the wait for the read in flight (close())

  /** Reads lines from `reader` (a `Deno.Conn`, `Deno.stdin`...). */
  constructor(reader: Reader, options: LineReaderOptions = {}) {
    this.#reader = reader;
    this.#maxLine = options.maxLine ?? 64 * 1024;
    this.#requireNewline = options.requireNewline ?? false;
    if (options.signal?.aborted) this.close();
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  /**
   * The next line, or `null` at end of stream.
   *
   * @throws {LineTooLongError} past `maxLine`: the reader never buffers more.
   * @throws {TruncatedLineError} with `requireNewline`, when the stream ends mid-line.
   */
  async readLine(): Promise<Uint8Array | null> {
    while (true) {
      const newline = this.#buf.subarray(this.#scanned, this.#end).indexOf(0x0a);
      if (newline !== -1) {
        const end = this.#scanned + newline;
        const start = this.#start;
        this.#start = this.#scanned = end + 1;
        return this.#line(start, end);
      }
      this.#scanned = this.#end;
      // No newline yet: its `\r` may be in, so allow one byte for it.
      if (this.#end - this.#start > this.#maxLine + 1) throw new LineTooLongError(this.#maxLine);
      if (this.#error !== undefined) throw this.#error;
      if (this.#eof) {
        if (this.#start === this.#end) return null;
        const start = this.#start;
        this.#start = this.#end;
        if (this.#requireNewline) throw new TruncatedLineError(this.#buf.slice(start, this.#end));
        return this.#line(start, this.#end);
      }
      this.#makeRoom();
      const read = this.#reader.read(this.#buf.subarray(this.#end));
      try {
        // A promise per read that close() can end: racing one long-lived promise instead would
        // leave a reaction on it per read (310 bytes a line, for as long as the reader lives).
        const n = await new Promise<number | null>((resolve, reject) => {
          this.#wake = resolve;
          read.then(resolve, reject); // after a close, its result or failure is ignored
        });
        this.#wake = undefined;
        if (this.#eof) return null; // closed while waiting: a half-received line is not a line
        if (n === null) this.#eof = true;
        else this.#end += n;
      } catch (err) {
        this.#error = err; // every later call fails the same way
      }
    }
  }

  /** Iterates over the lines until end of stream. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (let line = await this.readLine(); line !== null; line = await this.readLine()) yield line;
  }

  /** Stops: a waiting `readLine()` returns `null`, and so does every later one. */
  close(): void {
    this.#eof = true;
    this.#start = this.#scanned = this.#end;
    this.#wake?.(null);
  }

  #line(start: number, end: number): Uint8Array {
    if (end > start && this.#buf[end - 1] === 0x0d) end--; // the `\r` of `\r\n`
    if (end - start > this.#maxLine) throw new LineTooLongError(this.#maxLine);
    return this.#buf.subarray(start, end);
  }

  #makeRoom(): void {
    if (this.#start === this.#end) this.#start = this.#end = this.#scanned = 0;
    if (this.#end < this.#buf.length) return;
    const pending = this.#buf.subarray(this.#start, this.#end);
    const limit = this.#maxLine + 2; // a whole line with its `\r\n`
    if (pending.length * 2 > this.#buf.length && this.#buf.length < limit) {
      const bigger = new Uint8Array(Math.min(this.#buf.length * 4, limit));
      bigger.set(pending);
      this.#buf = bigger;
    } else this.#buf.copyWithin(0, this.#start, this.#end);
    this.#scanned -= this.#start;
    this.#end -= this.#start;
    this.#start = 0;
  }
}

/** Joins byte arrays into one, for one `write()` instead of several. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.byteLength, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

/** Closes a connection or listener that may be closed already. */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch { /* already closed */ }
}

/** The peer closed before the bytes we needed arrived. */
export class UnexpectedEofError extends Error {
  /** Builds it for `received` of `expected` bytes. */
  constructor(readonly received: number, readonly expected: number) {
    super(`connection closed after ${received} of ${expected} bytes`);
    this.name = "UnexpectedEofError";
  }
}

/** The peer sent nothing for too long: a deadline (`IdleClock`, server.ts) ran out. */
export class ReadTimeoutError extends Error {
  /** Builds it for a silence of `timeoutMs`. */
  constructor(readonly timeoutMs: number) {
    super(`no data for ${timeoutMs / 1000} s`);
    this.name = "ReadTimeoutError";
  }
}

/** A line grew past the limit before its `\n` arrived. */
export class LineTooLongError extends Error {
  /** Builds it for the limit `maxLine`. */
  constructor(readonly maxLine: number) {
    super(`line longer than ${maxLine} bytes`);
    this.name = "LineTooLongError";
  }
}

/** The stream ended in the middle of a line: a cut-off reply is not a reply. */
export class TruncatedLineError extends Error {
  /** Builds it for the unfinished line `partial`. */
  constructor(readonly partial: Uint8Array) {
    const bytes = plural(partial.length, "byte");
    super(`the stream ended in the middle of a line (${bytes} without a newline)`);
    this.name = "TruncatedLineError";
  }
}
