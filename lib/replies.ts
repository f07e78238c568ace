/**
 * Speed part: {@linkcode ReplyBatch} answers every line that arrived
 * together with one `write()`. All a learner needs of it: `add()` copies a
 * reply into the batch, and `send()` is one `writeAll` of the batch, after
 * which a big batch lets the other clients run (the fairness the README
 * describes). How the batch is built can be skipped.
 *
 * Why: each `write()` is a trip into the runtime and the kernel, and costs
 * about as much as a small reply takes to build. A client that pipelines
 * (sends many lines without waiting) gets its replies many times faster in
 * one write than in one write per line. The batch is also where a server
 * stays fair: after sending a big batch it lets the event loop run the other
 * connections before it reads more from this one.
 *
 * @example Answer two lines that came together, with one write
 * ```ts
 * import { ReplyBatch } from "./replies.ts";
 * const sent: string[] = [];
 * const conn = {
 *   write(p: Uint8Array) {
 *     sent.push(new TextDecoder().decode(p));
 *     return Promise.resolve(p.length);
 *   },
 * };
 * const replies = new ReplyBatch(conn);
 * const OK = new TextEncoder().encode("OK ... ");
 * const NL = new TextEncoder().encode("\n");
 * for (const line of ["one", "two"]) replies.add(OK, new TextEncoder().encode(line), NL);
 * await replies.send();
 * console.log(sent); // [ "OK ... one\nOK ... two\n" ]
 * ```
 *
 * @module
 */

import type { IdleClock } from "./deadline.ts";
import { nextTurn, writeAll, type Writer } from "./io.ts";

/** A batch this big (a busy stream) keeps its buffer, and yields to other clients after it. */
const BIG_BATCH = 4096;
/**
 * Small batches (the ping-pong case) are built in 256-byte buffers shared by
 * all connections: allocating a fresh ArrayBuffer per reply cost as much time
 * as the rest of a round trip, and keeping one per connection would cost
 * every idle client its size.
 */
const SMALL = 256;
const MAX_SPARE = 1024;
const spare: Uint8Array[] = [];
const NO_BYTES = new Uint8Array(0);

/**
 * Collects replies and sends them with one `write()`.
 *
 * {@linkcode ReplyBatch.add} copies the bytes at once, so a line that is a
 * view into a reader's buffer can be passed as it is.
 */
export class ReplyBatch {
  readonly #conn: Writer;
  readonly #progress: IdleClock | undefined;
  #out: Uint8Array = NO_BYTES;
  #size = 0;

  /**
   * Replies go to `conn`. With `progress`, every write that gets bytes out
   * restarts that clock (see `writeAll`), so a client that takes its replies,
   * however slowly, is not idle.
   */
  constructor(conn: Writer, progress?: IdleClock) {
    this.#conn = conn;
    this.#progress = progress;
  }

  /** Appends one reply, made of `parts`, to the batch. */
  add(...parts: Uint8Array[]): void {
    for (const part of parts) {
      const n = part.length;
      if (this.#size + n > this.#out.length) this.#grow(this.#size + n);
      // Tiny parts (a prefix, a newline) are copied faster by hand than by set().
      if (n > 16) this.#out.set(part, this.#size);
      else for (let i = 0; i < n; i++) this.#out[this.#size + i] = part[i];
      this.#size += n;
    }
  }

  /** Writes the batch in full, then empties it. A big batch then lets other clients run. */
  async send(): Promise<void> {
    const out = this.#out;
    const size = this.#size;
    if (size === 0) return;
    this.#out = NO_BYTES; // what is added during the write starts a new batch
    this.#size = 0;
    try {
      await writeAll(this.#conn, out.subarray(0, size), this.#progress);
    } finally {
      if (out.length === SMALL && spare.length < MAX_SPARE) spare.push(out);
    }
    // A busy stream keeps its buffer (a fresh 64 KiB per batch costs more
    // than the copy); after a small batch it is let go, so that an idle
    // connection holds none.
    if (size >= BIG_BATCH) {
      if (this.#out === NO_BYTES) this.#out = out;
      await nextTurn();
    }
  }

  #grow(needed: number): void {
    const next = this.#size === 0 && needed <= SMALL
      ? spare.pop() ?? new Uint8Array(SMALL)
      : new Uint8Array(Math.max(needed, this.#out.length * 2, SMALL));
    next.set(this.#out.subarray(0, this.#size));
    this.#out = next;
  }
}
