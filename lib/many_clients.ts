/**
 * What a server that serves many clients at once needs, and one that serves
 * a single client can leave behind: fairness and fewer writes.
 *
 * - {@linkcode nextPoll}: each client gets one read per poll of the event
 *   loop, so a client that floods cannot starve the others.
 * - {@linkcode ReplyBatch}: every line that arrived together is answered with
 *   one `write()`. All a learner needs of it: `add()` copies a reply into the
 *   batch, and `send()` is one `writeAll` of the batch.
 *
 * Why batch: each `write()` is a trip into the runtime and the kernel, and
 * costs about as much as a small reply takes to build. A client that
 * pipelines (sends many lines without waiting) gets its replies many times
 * faster in one write than in one write per line.
 *
 * @example Answer two lines that came together, with one write
 * ```ts
 * import { ReplyBatch } from "./many_clients.ts";
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

import { closeQuietly, countPoll, nextTurn, writeAll, type Writer } from "./io.ts";
import { logError, waitForLogReader } from "./log.ts";

/**
 * Resolves after Deno has next asked the kernel which sockets are ready
 * (epoll on Linux): the fairness step of a server that serves many clients.
 *
 * Why a server needs it. Deno asks the kernel only when its event loop has
 * nothing left to run: no callback, no promise continuation, no immediate.
 * A read whose bytes are already there completes at once, without that
 * question. So while some client always has bytes waiting when its loop
 * comes back to read (a flood, or a hundred clients that each answer in the
 * time it takes to serve the other ninety-nine), the loop never runs dry,
 * and a client whose bytes arrived since the last poll is not even noticed:
 * a probe among 100 flooding clients waited 1.3 s (`deno task bench`).
 * `setImmediate` and `setTimeout(0)` do not help: Deno runs them without
 * polling the kernel in between.
 *
 * The rule that fixes it is the one an epoll server follows: each client
 * gets one read per poll. After answering a batch, a client's loop awaits
 * `nextPoll()` before it reads again; all the clients that wait in one turn
 * share one poll.
 *
 * How: a loopback TCP connection to ourselves (the "self-pipe trick"). A
 * read on its empty end can only complete when the kernel, asked by the next
 * poll, says a byte has arrived; we write that byte right after starting the
 * read. It opens on the first loopback address the program may use without
 * a permission prompt (127.0.0.1, ::1, then 0.0.0.0 or ::, for a server
 * run with `--allow-net=0.0.0.0`); with none, it says so once on stderr and
 * falls back to `setImmediate`, which keeps the clients' order but not the
 * poll. Before the poll it also waits for the log's reader, when it is far
 * behind (`waitForLogReader` in log.ts).
 *
 * The pair stays open for the life of the program (the example is not run
 * as a test for that reason: the test sanitizers count it as a leak).
 *
 * @example In each client's loop of a server
 * ```ts ignore
 * import { nextPoll } from "./many_clients.ts";
 * for (let batch = await lines.readBatch(); batch !== null; batch = await lines.readBatch()) {
 *   for (const line of batch) replies.add(OK, line, NEWLINE);
 *   await replies.send(); // one write answers them all
 *   await nextPoll(); // the other clients get their turn before this one is read again
 * }
 * ```
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
    countPoll();
    polled = undefined;
  }
}

/**
 * Opens the loopback pair on the first address we may use without asking
 * (asking would stop the program at a permission prompt), and makes sure the
 * connection accepted is our own: another program could connect first.
 */
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
  readonly #progress: { restart(): void } | undefined;
  #out: Uint8Array = NO_BYTES;
  #size = 0;

  /**
   * Replies go to `conn`. With `progress`, every write that gets bytes out
   * restarts that clock (see `writeAll`), so a client that takes its replies,
   * however slowly, is not idle.
   */
  constructor(conn: Writer, progress?: { restart(): void }) {
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
