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
 * a time carries the queue to stdout (or stderr) in the background. While the
 * output is read, every line goes out, in order. While it is not, the queue
 * grows to at most 1 MiB; lines beyond that are dropped and counted, and once
 * the output drains one line says how many were lost. Before a program
 * exits, {@linkcode flushLogs} gives the queue a moment to go out.
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

/** The most bytes a stream holds for a reader that does not read; later lines are dropped. */
const MAX_QUEUED = 1024 * 1024;
const encoder = new TextEncoder();

/** One output stream's queue, and the writer that drains it. */
class LineQueue {
  readonly #out: { write(p: Uint8Array): Promise<number> };
  #queue: Uint8Array[] = [];
  #queued = 0; // bytes in the queue and in the write in flight
  #dropped = 0; // lines dropped since the last report
  #writing: Promise<void> | undefined;
  #broken = false; // the output is gone (EPIPE, a closed terminal): stop writing

  constructor(out: { write(p: Uint8Array): Promise<number> }) {
    this.#out = out;
  }

  add(line: string): void {
    if (this.#broken) return;
    const bytes = encoder.encode(`${line}\n`);
    if (this.#queued + bytes.length > MAX_QUEUED) {
      this.#dropped++;
      return;
    }
    this.#queue.push(bytes);
    this.#queued += bytes.length;
    this.#writing ??= this.#drain();
  }

  /** Resolves when everything queued is written (or the output broke). */
  get idle(): Promise<void> {
    return this.#writing ?? Promise.resolve();
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const parts = this.#queue;
        this.#queue = [];
        const chunk = parts.length === 1 ? parts[0] : concat(parts);
        for (let at = 0; at < chunk.length;) at += await this.#out.write(chunk.subarray(at));
        this.#queued -= chunk.length;
        if (this.#queue.length === 0 && this.#dropped > 0) {
          // The reader is back: say what it missed, once.
          const n = this.#dropped;
          this.#dropped = 0;
          const note = `(${n} log line${
            n === 1 ? "" : "s"
          } dropped: nobody was reading the output)`;
          const bytes = encoder.encode(`${note}\n`);
          this.#queue.push(bytes);
          this.#queued += bytes.length;
        }
      }
    } catch {
      this.#broken = true; // nobody will ever read it: forget the queue
      this.#queue = [];
    } finally {
      this.#writing = undefined;
    }
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const stdout = new LineQueue(Deno.stdout);
const stderr = new LineQueue(Deno.stderr);

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
  stdout.add(line);
}

/**
 * Writes `line` and a newline to stderr, without ever waiting for it.
 *
 * @example
 * ```ts
 * import { flushLogs, logError } from "./log.ts";
 * logError("trace 127.0.0.1:41234 +0.001s read 6 B \"hello\\n\"");
 * await flushLogs(); // (only before an exit)
 * ```
 */
export function logError(line: string): void {
  stderr.add(line);
}

/**
 * Waits until every queued line is written, or `ms` have passed (a reader
 * that does not read must not keep the program from exiting).
 *
 * @example
 * ```ts
 * import { flushLogs, log } from "./log.ts";
 * log("shut down");
 * await flushLogs(300);
 * ```
 */
export async function flushLogs(ms = 300): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all([stdout.idle, stderr.idle]),
    new Promise((resolve) => timer = setTimeout(resolve, ms)),
  ]);
  clearTimeout(timer);
}
