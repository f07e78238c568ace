/**
 * Log lines for a server, written so that nobody's reading (or not reading)
 * them can stop it.
 *
 * `console.log` is a synchronous write. When stdout is a pipe that nobody
 * reads (a stalled `| less`, a log shipper that hangs), the pipe fills
 * (64 KiB on Linux) and the next `console.log` waits, with the whole event
 * loop, for a reader that may never come: every client freezes, and even
 * Ctrl+C is never handled, because its handler runs on that same loop. A
 * client that makes the server log (each reset is a line) could freeze it on
 * purpose.
 *
 * {@linkcode log} and {@linkcode logError} only queue the line; one write at
 * a time carries the queue to stdout and stderr in the background, in the
 * order the lines were logged, whole lines in each write. While the output
 * is read, nothing is lost: past 256 KiB queued, {@linkcode waitForLogReader}
 * (which a server's `nextPoll` calls) holds the server back to its reader's
 * pace, as `console.log` would. Once a write has made no progress for half a
 * second, the reader has stopped: the server goes on, the queue grows to at
 * most 1 MiB, lines beyond that are dropped and counted, and once the output
 * is read again one line says how many. Before a program exits,
 * {@linkcode flushLogs} gives the queue a moment to go out.
 *
 * @example
 * ```ts
 * import { flushLogs, log } from "./log.ts";
 * log("listening on 127.0.0.1:8888"); // queued; written in the background
 * await flushLogs(); // before Deno.exit(), so that the last lines are not lost
 * ```
 *
 * @module
 */

/** The most bytes held for a reader that has stopped reading; later lines are dropped. */
const MAX_QUEUED = 1024 * 1024;
/** Past this many bytes queued, a server waits for a reader that still reads. */
const HIGH_WATER = 256 * 1024;
/** A write that has made no progress for this long: the reader has stopped. */
const STALL_MS = 500;
/** Lines are written in chunks of at most this many bytes (a pipe writes these whole). */
const CHUNK = 4096;
const encoder = new TextEncoder();

type Output = { write(p: Uint8Array): Promise<number> };
type Entry = { out: Output; bytes: Uint8Array };

let queue: Entry[] = [];
let first = 0; // queue[first] is the oldest line not yet written
let queued = 0; // bytes queued, including the chunk being written
let dropped = 0; // lines dropped since the last report
let writing: Promise<void> | undefined; // the writer, while it runs
let progressAt = 0; // when the writer last got bytes out (performance.now())
const broken = new Set<Output>(); // outputs that are gone (EPIPE, a closed terminal)
let caughtUp: { promise: Promise<void>; resolve: () => void } | undefined;

function add(out: Output, line: string): void {
  if (broken.has(out)) return;
  const bytes = encoder.encode(`${line}\n`);
  if (queued + bytes.length > MAX_QUEUED) {
    dropped++;
    return;
  }
  queue.push({ out, bytes });
  queued += bytes.length;
  if (writing === undefined) {
    progressAt = performance.now();
    writing = drain();
  }
}

async function drain(): Promise<void> {
  try {
    while (first < queue.length) {
      // Whole lines for one output, up to CHUNK bytes (a longer line goes alone).
      const out = queue[first].out;
      let end = first + 1;
      let size = queue[first].bytes.length;
      while (
        end < queue.length && queue[end].out === out && size + queue[end].bytes.length <= CHUNK
      ) size += queue[end++].bytes.length;
      const chunk = new Uint8Array(size);
      for (let i = first, at = 0; i < end; at += queue[i++].bytes.length) {
        chunk.set(queue[i].bytes, at);
      }
      try {
        await writeFully(out, chunk);
      } catch {
        broken.add(out); // nobody will ever read it: forget its lines
        queue = queue.filter((e, i) => i >= end && e.out !== out);
        first = 0;
        queued = queue.reduce((n, e) => n + e.bytes.length, 0);
        continue;
      }
      first = end;
      queued -= size;
      if (first > 1024 && first * 2 > queue.length) [queue, first] = [queue.slice(first), 0];
      if (queued < HIGH_WATER / 2) wakeWaiters();
      if (first === queue.length && dropped > 0) {
        // The reader is back: say what it missed, once.
        const n = dropped;
        dropped = 0;
        add(out, `(${n} log line${n === 1 ? "" : "s"} dropped: the output was not being read)`);
      }
    }
  } finally {
    queue = [];
    first = 0;
    writing = undefined;
    wakeWaiters();
  }
}

/** Writes all of `chunk`; an output that is non-blocking and full is tried again shortly. */
async function writeFully(out: Output, chunk: Uint8Array): Promise<void> {
  for (let at = 0; at < chunk.length;) {
    try {
      at += await out.write(chunk.subarray(at));
      progressAt = performance.now();
    } catch (err) {
      if (!(err instanceof Deno.errors.WouldBlock)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

function wakeWaiters(): void {
  caughtUp?.resolve();
  caughtUp = undefined;
}

/**
 * Writes `line` and a newline to stdout, without ever waiting for it: see
 * the module doc.
 *
 * @example
 * ```ts
 * import { flushLogs, log } from "./log.ts";
 * log("Client (127.0.0.1:41234) connected");
 * await flushLogs(); // (only before an exit)
 * ```
 */
export function log(line: string): void {
  add(Deno.stdout, line);
}

/**
 * Writes `line` and a newline to stderr, without ever waiting for it, after
 * the lines logged before it.
 *
 * @example
 * ```ts
 * import { flushLogs, logError } from "./log.ts";
 * logError("trace 127.0.0.1:41234 +0.001s read 6 B \"hello\\n\"");
 * await flushLogs(); // (only before an exit)
 * ```
 */
export function logError(line: string): void {
  add(Deno.stderr, line);
}

/**
 * `undefined` while there is little to write, or the reader has stopped
 * reading; otherwise a promise that resolves once the reader has caught up
 * (or stops). A server awaits it between batches (`nextPoll` does), so that
 * it logs no faster than a reader who reads.
 *
 * @example
 * ```ts
 * import { waitForLogReader } from "./log.ts";
 * await waitForLogReader(); // at once: nothing queued
 * ```
 */
export function waitForLogReader(): Promise<void> | undefined {
  if (queued < HIGH_WATER || performance.now() - progressAt > STALL_MS) return undefined;
  if (caughtUp === undefined) {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => resolve = r);
    caughtUp = { promise, resolve };
    const stalled = () => {
      if (caughtUp?.promise !== promise) return;
      if (performance.now() - progressAt > STALL_MS) wakeWaiters();
      else setTimeout(stalled, STALL_MS);
    };
    setTimeout(stalled, STALL_MS);
  }
  return caughtUp.promise;
}

/**
 * Waits until every queued line is written, or `ms` have passed (a reader
 * that does not read must not keep the program from exiting). True when
 * nothing is left to write.
 *
 * @example
 * ```ts
 * import { flushLogs, log } from "./log.ts";
 * log("shut down");
 * await flushLogs(300);
 * ```
 */
export async function flushLogs(ms = 300): Promise<boolean> {
  const deadline = performance.now() + ms;
  // A loop: a line logged while we wait starts the writer again.
  while (writing !== undefined) {
    const left = deadline - performance.now();
    if (left <= 0) return false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([writing, new Promise((resolve) => timer = setTimeout(resolve, left))]);
    clearTimeout(timer);
  }
  return true;
}
