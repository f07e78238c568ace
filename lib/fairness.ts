/**
 * Fairness for a server of many clients: {@linkcode nextPoll} gives each client one read per poll
 * of the kernel (the moment Deno asks which sockets are ready; see nextPoll), as `select()` gave
 * the seeds. A one-client script can leave it behind (socket_server keeps it for lesson 5's diff).
 *
 * @example In each client's loop of a server, after answering what arrived
 * ```ts ignore
 * await writeAll(conn, reply);
 * await nextPoll(); // the other clients get their turn before this one is read again
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { closeQuietly } from "./io.ts";
import { logError, waitForLogReader } from "./log.ts";

/** Resolves once the event loop has run again: no poll, but the clients keep their order. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Resolves after Deno has next asked the kernel which sockets are ready: the fairness step. A read
 * whose bytes are already there completes without that question, so while some client always has
 * bytes waiting, one whose bytes arrived since the last poll is never noticed (a probe among 100
 * flooding clients waited 1.3 s). So each client awaits this after each batch: one read per client
 * per poll. How: a read on the empty end of a loopback connection to ourselves (the self-pipe
 * trick) completes only at the next poll. (`setImmediate` does not poll.)
 */
export function nextPoll(): Promise<void> {
  return polled ??= poll();
}

/** How many times `poll()` has ended: a poll, or a turn of the loop while the self-pipe is off. */
let polls = 0;

/** How many times {@linkcode nextPoll} has resolved (many_clients.ts: has a read waited long?). */
export const pollCount = (): number => polls;

/** The wait that the clients of this turn share, until the poll it waits for. */
let polled: Promise<void> | undefined;
/** Both ends of the loopback pair once open; `null` when none may be opened. */
let selfPipe: ReturnType<typeof openSelfPipe> | undefined;
/** After a failed open (out of file descriptors, say): when to try again. */
let retryAt = 0;
/** Whether the program was told that fairness is off for now (said once per episode). */
let toldFailure = false;
/** No loopback address may be used without a permission prompt: no pair, ever. */
let forbidden = false;
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
    arrived.catch(() => {}); // (a failure is handled below)
    try {
      await pipe.writer.write(ONE_BYTE); // arrives now, but the read hears of it at the next poll
      if ((await arrived) === null) throw new Error("closed");
      pipe.reader.unref();
    } catch { // reset or closed under us: forget the pair (the next poll opens another)
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

const NO_LOOPBACK = "note: no permission for a loopback connection (--allow-net=127.0.0.1): " +
  "a busy client may now delay the others (see nextPoll in lib/fairness.ts)";

const cannotOpen = (err: unknown) =>
  `note: nextPoll cannot open its loopback connection (${(err as Error)?.message}): ` +
  "a busy client may delay the others until it can (see lib/fairness.ts)";

/** The pair, on the first loopback address we may use without a prompt; `null` if none opens. */
async function openSelfPipe(): Promise<{ reader: Deno.TcpConn; writer: Deno.TcpConn } | null> {
  let permitted = false, failure: unknown;
  for (const hostname of ["127.0.0.1", "::1", "0.0.0.0", "::"]) {
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    if (Deno.permissions.querySync({ name: "net", host }).state !== "granted") continue;
    permitted = true;
    try {
      using listener = Deno.listen({ hostname, port: 0 });
      const writer = await Deno.connect({ hostname, port: listener.addr.port });
      for (let tries = 0; tries < 10; tries++) {
        const reader = await listener.accept();
        if (reader.remoteAddr.port === writer.localAddr.port) {
          for (const end of [reader, writer]) end.unref(); // a finished program may exit
          if (toldFailure) logError("note: nextPoll works again: every client gets its turn");
          toldFailure = false;
          return { reader, writer };
        }
        reader.close(); // not ours
      }
      writer.close();
    } catch (err) {
      failure = err; // this address is not there (no IPv6, say), or no file descriptor is left
    }
  }
  forbidden = !permitted; // for good: asking would stop the program at a prompt
  if (forbidden || !toldFailure) logError(forbidden ? NO_LOOPBACK : cannotOpen(failure));
  toldFailure = true;
  retryAt = performance.now() + 1000; // out of file descriptors, say: try again in a second
  return null;
}
