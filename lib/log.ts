/**
 * Log lines for a server, written so that nobody's reading (or not reading) them can stop it.
 * `console.log` is a synchronous write: when stdout is a pipe that nobody reads, the pipe fills
 * (64 KiB) and the next `console.log` waits, with the whole event loop, every client and Ctrl+C
 * included. {@linkcode log} only queues the line; one write at a time carries the queue out in
 * the background, in order. While the output is read nothing is lost (past 256 KiB queued,
 * {@linkcode waitForLogReader} holds the server to its reader's pace); once a write has made no
 * progress for 0.5 s the reader has stopped: the queue grows to 1 MiB, later lines are dropped
 * and counted, and the count is said once the output is read again. Importing it registers the
 * flush with `beforeExit` (cli.ts), which `runMain` and `exitSoon` (signals.ts) run before exiting.
 *
 * @example
 * ```ts
 * import { flushLogs, log } from "./log.ts";
 * log("listening on 127.0.0.1:8888"); // queued; written in the background
 * await flushLogs(); // (an exit through signals.ts or runMain does this)
 * ```
 *
 * @module
 */

import { beforeExit } from "./cli.ts";

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
      ) {
        size += queue[end].bytes.length;
        end++;
      }
      const chunk = new Uint8Array(size);
      let at = 0;
      for (let i = first; i < end; i++) {
        chunk.set(queue[i].bytes, at);
        at += queue[i].bytes.length;
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
      if (first > 1024 && first * 2 > queue.length) {
        queue = queue.slice(first); // forget the lines written, now and then
        first = 0;
      }
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

/** Writes `line` and a newline to stdout, without ever waiting for it. */
export function log(line: string): void {
  add(Deno.stdout, line);
}

/** Writes `line` and a newline to stderr, after the lines logged before it, never waiting. */
export function logError(line: string): void {
  add(Deno.stderr, line);
}

/**
 * `undefined` while little is queued or the reader has stopped; else a
 * promise that resolves once the reader has caught up (`nextPoll` awaits it).
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

/** Waits until every queued line is written, or `ms` have passed; true if all went out. */
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

beforeExit(flushLogs);
