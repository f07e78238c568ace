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
import { logError, waitForLogReader } from "./log.ts";

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
import { logError, waitForLogReader } from "./log.ts";
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
let selfPipe: Promise<SelfPipe | null> | undefined;
type SelfPipe = { reader: Deno.TcpConn; writer: Deno.TcpConn };
const ONE_BYTE = new Uint8Array(1);
const DRAIN = new Uint8Array(64);

/**
 * How many polls the servers' `nextPoll` has waited for so far: a clock for
 * whoever wants to know whether a read has waited through one (lines.ts).
 *
 * @example
 * ```ts ignore
 * import { pollsSoFar } from "./io.ts";
 * const then = pollsSoFar(); // later: pollsSoFar() > then + 1 means a whole poll came and went
 * ```
 */
export function pollsSoFar(): number {
  return polls;
}
let polls = 0;

async function poll(): Promise<void> {
  try {
    await waitForLogReader(); // the log's reader is one more to take turns with
    const pipe = await (selfPipe ??= openSelfPipe());
    if (pipe === null) return await nextTurn();
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

/**
 * Opens the loopback pair on the first address we may use without asking
 * (asking would stop the program at a permission prompt), and makes sure the
 * connection accepted is our own: another program could connect first.
 */
async function openSelfPipe(): Promise<SelfPipe | null> {
  for (const hostname of ["127.0.0.1", "::1", "0.0.0.0", "::"]) {
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    if (Deno.permissions.querySync({ name: "net", host }).state !== "granted") continue;
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
            return { reader, writer };
          }
          reader.close(); // not ours
        }
        writer.close();
      } finally {
        listener.close();
      }
    } catch {
      // This address is not there (no IPv6, say): try the next.
    }
  }
  logError(
    "note: no permission for a loopback connection (--allow-net=127.0.0.1): " +
      "a busy client may now delay the others (see nextPoll in lib/io.ts)",
  );
  return null;
}
