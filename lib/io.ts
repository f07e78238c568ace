/**
 * Exact reads and complete writes over a TCP connection.
 *
 * TCP is a byte stream, not a message queue: one `read()` returns whatever
 * bytes have arrived so far (maybe 1, maybe 10,000), and one `write()` may
 * accept only part of what it was given when the kernel's send buffer is full.
 * These helpers loop until the job is really done.
 *
 * Neither a read nor a write can be cancelled in Deno: to give up on one
 * (a deadline, a shutdown), close the connection, and the call fails. See
 * `closeWhenIdle` in deadline.ts.
 *
 * @example Read a 4-byte header, then write a reply in full
 * ```ts
 * import { readExact, writeAll } from "./io.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * const server = await listener.accept();
 * await writeAll(client, new Uint8Array([1, 2, 3, 4]));
 * const header = await readExact(server, 4);
 * console.log(header); // Uint8Array(4) [ 1, 2, 3, 4 ]
 * client.close();
 * server.close();
 * listener.close();
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { IdleClock } from "./deadline.ts";
import { UnexpectedEofError } from "./errors.ts";

/** Anything with Deno's `read(buffer)` contract: a `Deno.Conn`, `Deno.stdin`... */
export interface Reader {
  /** Reads up to `p.byteLength` bytes into `p`; `null` means end of stream. */
  read(p: Uint8Array): Promise<number | null>;
}

/** Anything with Deno's `write(bytes)` contract, which may write fewer bytes. */
export interface Writer {
  /** Writes some prefix of `p` and returns how many bytes it wrote. */
  write(p: Uint8Array): Promise<number>;
}

/**
 * Reads exactly `n` bytes, however the network splits them.
 *
 * A single `read()` returns what has arrived so far, so this keeps reading
 * until `n` bytes are in. Bytes after the `n`th are not read.
 *
 * @throws {UnexpectedEofError} when the stream ends first; its `received`
 *   says how many bytes did arrive.
 *
 * @example
 * ```ts
 * import { readExact } from "./io.ts";
 * import { UnexpectedEofError } from "./errors.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ port: listener.addr.port });
 * const server = await listener.accept();
 * await client.write(new Uint8Array([1, 2, 3]));
 * await client.closeWrite(); // 3 bytes, then end of stream
 * try {
 *   await readExact(server, 32);
 * } catch (err) {
 *   if (err instanceof UnexpectedEofError) console.log(err.received); // 3
 * }
 * client.close();
 * server.close();
 * listener.close();
 * ```
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
 * Writes every byte of `bytes`. One `write()` may accept only part of a large
 * buffer (the kernel's send buffer is full while the peer is slow to read), so
 * this loops until all of it is gone.
 *
 * A peer that stops reading makes this wait forever: pass an
 * {@linkcode IdleClock} as `progress` and each `write()` that gets bytes out
 * restarts it, so the clock runs out only when the peer takes nothing at all.
 *
 * @example
 * ```ts
 * import { writeAll } from "./io.ts";
 * await writeAll(Deno.stdout, new TextEncoder().encode("hello\n"));
 * ```
 */
export async function writeAll(
  writer: Writer,
  bytes: Uint8Array,
  progress?: IdleClock,
): Promise<void> {
  let written = 0;
  while (written < bytes.byteLength) {
    written += await writer.write(bytes.subarray(written));
    progress?.restart();
  }
}

/**
 * Joins byte arrays into one, for a single `write()` instead of several.
 *
 * @example
 * ```ts
 * import { concatBytes } from "./io.ts";
 * console.log(concatBytes([new Uint8Array([1]), new Uint8Array([2, 3])]));
 * // Uint8Array(3) [ 1, 2, 3 ]
 * ```
 */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let size = 0;
  for (const part of parts) size += part.byteLength;
  const out = new Uint8Array(size);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

/**
 * Closes a connection or listener that may already be closed.
 *
 * @example
 * ```ts
 * import { closeQuietly } from "./io.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * closeQuietly(listener);
 * closeQuietly(listener); // no error the second time
 * ```
 */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}

/**
 * Resolves once the event loop has polled for I/O again, so that every other
 * connection's ready reads and writes are handled first. For a client that
 * waits on one thing at a time; a server uses {@linkcode nextPoll}.
 *
 * @example
 * ```ts
 * import { nextTurn } from "./io.ts";
 * await nextTurn();
 * ```
 */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

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
 * read. Without permission for a loopback connection, it falls back to
 * `setImmediate`, which keeps the clients' order but not the poll.
 *
 * The pair stays open for the life of the program (the example is not run
 * as a test for that reason: the test sanitizers count it as a leak).
 *
 * @example In each client's loop of a server
 * ```ts ignore
 * import { nextPoll } from "./io.ts";
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
/** Both ends of the loopback pair, once it is open; `null` when it cannot be. */
let selfPipe: Promise<{ reader: Deno.Conn; writer: Deno.Conn } | null> | undefined;
const ONE_BYTE = new Uint8Array(1);
const DRAIN = new Uint8Array(64);

async function poll(): Promise<void> {
  try {
    const pipe = await (selfPipe ??= openSelfPipe());
    if (pipe === null) return await nextTurn();
    pipe.reader.ref(); // while someone waits on it, the read keeps the program alive
    const arrived = pipe.reader.read(DRAIN); // pending: the socket is empty
    await pipe.writer.write(ONE_BYTE); // arrives now, but the read hears of it at the next poll
    await arrived;
    pipe.reader.unref();
  } finally {
    polled = undefined;
  }
}

async function openSelfPipe(): Promise<{ reader: Deno.Conn; writer: Deno.Conn } | null> {
  for (const hostname of ["127.0.0.1", "::1"]) {
    try {
      const listener = Deno.listen({ hostname, port: 0 });
      try {
        const writer = await Deno.connect({ hostname, port: listener.addr.port });
        const reader = await listener.accept();
        // Between polls the pair must not keep a program alive that is otherwise done.
        reader.unref();
        writer.unref();
        return { reader, writer };
      } finally {
        listener.close();
      }
    } catch {
      // No permission for this loopback address, or no such address: try the next.
    }
  }
  return null;
}
