/**
 * A connection read all the time, for a request/reply protocol without ids.
 *
 * Only sensor_client.ts uses it, so it lives beside that script.
 *
 * When every reply looks alike (`pong`), only the timing tells a reply from a
 * stale or extra line. So a client must keep reading even when it awaits
 * nothing: a {@linkcode LineInbox} always has a `readLine()` under way, stamps
 * each line with the time it came ({@linkcode performance.now}), and keeps it
 * until asked. The client can then wait for the next line with a time limit,
 * look whether anything is already there before it sends, and see the bytes
 * of a line that has begun but not ended ({@linkcode LineInbox.partial}).
 *
 * @example Two lines in one write: the second is already there when the first is taken
 * ```ts
 * import { LineInbox } from "./inbox.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * const server = await listener.accept();
 * const inbox = new LineInbox(client, { requireNewline: true });
 * await server.write(new TextEncoder().encode("pong\npong\npo"));
 * console.log(await inbox.next(1000)); // { line: Uint8Array(4) [ 112, 111, 110, 103 ], at: 16.9 }
 * console.log(await inbox.next(0)); // the second line: it came with the first
 * console.log(await inbox.next(0)); // undefined: nothing more has come
 * console.log(inbox.partial); // Uint8Array(2) [ 112, 111 ]: "po", no newline yet
 * server.close();
 * console.log(await inbox.next(1000)); // { end: true, error: TruncatedLineError ... }
 * client.close();
 * listener.close();
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { concatBytes, LineReader, type LineReaderOptions, type Reader } from "../../lib/io.ts";

/** Resolves once the event loop has run again: I/O already ready is handled first. */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** What came: a line and when (`performance.now()`), or the end of the stream (and why). */
export type Arrival = { line: Uint8Array; at: number } | { end: true; error?: unknown };

/** Lines as they arrive, read all the time (see the module doc). */
export class LineInbox {
  readonly #lines: LineReader;
  #partial: Uint8Array = new Uint8Array(0);
  #next: Promise<Arrival>;
  #arrived: Arrival | undefined; // what #next resolved to, once it has

  /** Starts reading `reader` at once; `options` are the {@linkcode LineReader}'s. */
  constructor(reader: Reader, options: LineReaderOptions = {}) {
    // The LineReader keeps an unfinished line to itself: a tap on its reads keeps a copy.
    const tap: Reader = {
      read: async (p) => {
        const n = await reader.read(p);
        const bytes = p.subarray(0, n ?? 0);
        const newline = bytes.lastIndexOf(0x0a);
        this.#partial = newline === -1
          ? concatBytes([this.#partial, bytes])
          : bytes.slice(newline + 1);
        return n;
      },
    };
    this.#lines = new LineReader(tap, options);
    this.#next = this.#read();
  }

  /**
   * The next arrival, or `undefined` when `ms` pass first (`undefined`: wait
   * as long as it takes). A line is taken; the end stays, for every later call.
   * With `ms` 0, only what has already come.
   */
  async next(ms?: number): Promise<Arrival | undefined> {
    if (ms === 0) {
      // No timer: a zero-delay timer waits a millisecond or more, on every
      // sample. One turn of the event loop lets bytes already here arrive.
      await nextTurn();
      const arrival = this.#arrived;
      if (arrival && "line" in arrival) this.#next = this.#read();
      return arrival;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      if (ms !== undefined) timer = setTimeout(() => resolve(undefined), Math.max(0, ms));
    });
    try {
      const arrival = await Promise.race([this.#next, timeout]);
      if (arrival && "line" in arrival) this.#next = this.#read();
      return arrival;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The bytes after the last `\n` so far: a line begun but not ended (or cut off by the end). */
  get partial(): Uint8Array {
    return this.#partial;
  }

  #read(): Promise<Arrival> {
    this.#arrived = undefined;
    return this.#lines.readLine().then(
      (line): Arrival =>
        line === null ? { end: true } : { line: line.slice(), at: performance.now() },
      (error): Arrival => ({ end: true, error }),
    ).then((arrival) => this.#arrived = arrival);
  }
}
