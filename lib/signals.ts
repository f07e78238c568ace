/**
 * Ctrl+C, SIGTERM and SIGHUP for a program that must stop cleanly: the first
 * signal asks it to stop, a second one a moment later exits at once, and
 * says so in a last line.
 *
 * @example
 * ```ts
 * import { onStopSignal } from "./signals.ts";
 * const remove = onStopSignal(() => console.log("stopping"), { name: "demo" });
 * remove();
 * ```
 *
 * @module
 */

import { plural } from "./text.ts";
import { flushLogs, log } from "./log.ts";

/** Two signals closer together than this are one Ctrl+C, delivered twice. */
const SAME_SIGNAL_MS = 300;

/**
 * The exit code after a second signal: 130 (128 + SIGINT's number), what a
 * shell reports for a program that Ctrl+C interrupted, whichever signal it
 * was. A clean stop, after the first signal, exits 0.
 */
export const EXIT_INTERRUPTED = 130;

/**
 * The signals that ask a program to stop: Ctrl+C (SIGINT), `kill` (SIGTERM),
 * and the terminal closing (SIGHUP), all handled alike. Windows has only SIGINT.
 */
export const STOP_SIGNALS: readonly Deno.Signal[] = Deno.build.os === "windows"
  ? ["SIGINT"]
  : ["SIGINT", "SIGTERM", "SIGHUP"];

/** Options for {@linkcode onStopSignal}: what the last line of a forced exit says. */
export interface StopSignalOptions {
  /** The program's name, at the start of that line. */
  name?: string;
  /** How many clients are still connected: that many are cut off. */
  connections?: () => number;
}

/**
 * Calls `stop` on the first SIGINT, SIGTERM or SIGHUP, and on a second one a
 * moment later prints a last line (`socket_server: second Ctrl+C, exiting at
 * once (2 clients cut off)`) and exits at once with code
 * {@linkcode EXIT_INTERRUPTED}: a second Ctrl+C means "now". Signals that
 * arrive together count as one: under `deno task`, one Ctrl+C reaches the
 * script twice (the terminal sends it to the whole process group, and the
 * task runner forwards its own copy). Returns a function that removes the
 * listeners.
 *
 * @example
 * ```ts
 * import { onStopSignal } from "./signals.ts";
 * const remove = onStopSignal(() => console.log("stopping"), { name: "demo" });
 * remove();
 * ```
 */
export function onStopSignal(stop: () => void, options: StopSignalOptions = {}): () => void {
  let first: number | undefined;
  const listeners = STOP_SIGNALS.map((signal) => {
    const listener = () => {
      const now = performance.now();
      if (first === undefined) {
        first = now;
        stop();
      } else if (now - first > SAME_SIGNAL_MS) {
        exitAtOnce(forcedExitLine(signal, options));
      }
    };
    Deno.addSignalListener(signal, listener);
    return { signal, listener };
  });
  return () => {
    for (const { signal, listener } of listeners) Deno.removeSignalListener(signal, listener);
  };
}

/**
 * The last line of a forced exit: which signal, and who is cut off.
 *
 * @example
 * ```ts
 * import { forcedExitLine } from "./signals.ts";
 * console.log(forcedExitLine("SIGINT", { name: "socket_server", connections: () => 2 }));
 * // socket_server: second Ctrl+C, exiting at once (2 clients cut off)
 * ```
 */
export function forcedExitLine(signal: Deno.Signal, options: StopSignalOptions = {}): string {
  const which = signal === "SIGINT" ? "second Ctrl+C" : `second stop signal (${signal})`;
  const open = options.connections?.() ?? 0;
  const cut = open > 0 ? ` (${plural(open, "client")} cut off)` : "";
  return `${options.name ? `${options.name}: ` : ""}${which}, exiting at once${cut}`;
}

/**
 * Prints `line` and exits at once with {@linkcode EXIT_INTERRUPTED}. Every
 * forced exit goes through here: the one place where its last line is
 * written, so that a logger which buffers can be flushed here first.
 *
 * @example
 * ```ts ignore
 * import { exitAtOnce } from "./signals.ts";
 * exitAtOnce("demo: second Ctrl+C, exiting at once");
 * ```
 */
export async function exitAtOnce(line: string): Promise<never> {
  // Through the log's queue, after the lines before it; a terminal that is
  // gone (closing it sends SIGHUP) or a pipe nobody reads delays it 200 ms at most.
  log(line);
  await flushLogs(200);
  Deno.exit(EXIT_INTERRUPTED);
}
