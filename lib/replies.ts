/**
 * Speed part: {@linkcode ReplyBatch} answers every line that arrived
 * together with one `write()`. All a learner needs of it: `add()` copies a
 * reply into the batch, and `send()` is one `writeAll` of the batch. How the
 * batch is built can be skipped.
 *
 * Why: each `write()` is a trip into the runtime and the kernel, and costs
 * about as much as a small reply takes to build. A client that pipelines
 * (sends many lines without waiting) gets its replies many times faster in
 * one write than in one write per line. (Fairness between clients is the
 * server loop's `nextPoll()`, in io.ts.)
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
import { writeAll, type Writer } from "./io.ts";

/**
 * Batches are built in buffers lent by pools that all connections share,
 * and given back once their write is done: allocating a fresh ArrayBuffer
 * per reply cost as much time as the rest of a round trip (a fresh 64 KiB
 * one per batch, more than the copy), and a buffer kept by each connection
 * would stay with it while it sits idle (186 KiB per client after one
 * 60 KB line). So a connection holds a buffer only while its batch is being
 * built and written. Two sizes: 256 bytes (the ping-pong case) and 128 KiB
 * (a pipelining client: the replies to a 64 KiB read fit); a batch bigger
 * than that (a very long line) gets a buffer of its own.
 */
const SMALL = 256;
const BIG = 128 * 1024;
const spare = new Map<number, Uint8Array[]>([[SMALL, []], [BIG, []]]);
const MAX_SPARE = new Map([[SMALL, 1024], [BIG, 8]]);
const NO_BYTES = new Uint8Array(0);

/** A buffer of at least `size` bytes: from a pool when one fits. */
function borrow(size: number): Uint8Array {
  const pooled = size <= SMALL ? SMALL : size <= BIG ? BIG : size;
  return spare.get(pooled)?.pop() ?? new Uint8Array(pooled);
}

/** Gives a buffer back to its pool (unless the pool is full, or it has none). */
function giveBack(buffer: Uint8Array): void {
  const pool = spare.get(buffer.length);
  if (pool && pool.length < MAX_SPARE.get(buffer.length)!) pool.push(buffer);
}

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

  /**
   * Appends one reply, made of up to three parts, to the batch. (Named
   * parameters, not `...parts`: an array per line cost a flood 6%.)
   */
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
      giveBack(out); // its write is over: another connection may build in it
    }
  }

  #grow(needed: number): void {
    const next = borrow(this.#size === 0 ? needed : Math.max(needed, this.#out.length * 2));
    next.set(this.#out.subarray(0, this.#size));
    if (this.#out !== NO_BYTES) giveBack(this.#out);
    this.#out = next;
  }
}
