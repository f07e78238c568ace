/**
 * How a program stops: Ctrl+C, SIGTERM and SIGHUP ({@linkcode onStopSignal}),
 * and {@linkcode exitSoon}, which first runs the `beforeExit` hooks of cli.ts (log.ts's flush).
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

import { runExitHooks } from "./cli.ts";
import { plural } from "./text.ts";

/** Two signals closer than this are one Ctrl+C delivered twice (`deno task` forwards its own copy). */
const SAME_SIGNAL_MS = 300;

/** The exit code after a second signal: 130, as a shell reports a Ctrl+C. */
export const EXIT_INTERRUPTED = 130;

const STOP_SIGNALS: Deno.Signal[] = Deno.build.os === "windows"
  ? ["SIGINT"]
  : ["SIGINT", "SIGTERM", "SIGHUP"];

/** The code the exit under way will have: a forced exit that comes during a clean one wins. */
let exitCode: number | undefined;

/** Runs the `beforeExit` hooks for up to `ms`, then exits with `code` (the higher, if called twice). */
export async function exitSoon(code: number, ms: number): Promise<never> {
  exitCode = Math.max(exitCode ?? code, code);
  await runExitHooks(ms);
  Deno.exit(exitCode);
}

/** Options for {@linkcode onStopSignal}: the last line of a forced exit. */
export interface StopSignalOptions {
  /** The program's name, at the start of that line. */
  name?: string;
  /** How many clients are connected: they are cut off. */
  connections?: () => number;
  /** Where the line goes (default `console.log`; a server passes `log` of log.ts). */
  say?: (line: string) => void;
}

/**
 * Calls `stop` on the first SIGINT, SIGTERM or SIGHUP; a second one later
 * than 300 ms prints `NAME: second Ctrl+C, exiting at once (2 clients cut
 * off)` and exits with {@linkcode EXIT_INTERRUPTED}. Returns a function that
 * removes the listeners.
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
        (options.say ?? console.log)(forcedExitLine(signal, options));
        exitSoon(EXIT_INTERRUPTED, 200); // a reader that does not read delays it 200 ms at most
      }
    };
    Deno.addSignalListener(signal, listener);
    return { signal, listener };
  });
  return () => {
    for (const { signal, listener } of listeners) Deno.removeSignalListener(signal, listener);
  };
}

/** The last line of a forced exit: which signal, and who is cut off. */
export function forcedExitLine(signal: Deno.Signal, options: StopSignalOptions = {}): string {
  const which = signal === "SIGINT" ? "second Ctrl+C" : `second stop signal (${signal})`;
  const open = options.connections?.() ?? 0;
  const cut = open > 0 ? ` (${plural(open, "client")} cut off)` : "";
  return `${options.name ? `${options.name}: ` : ""}${which}, exiting at once${cut}`;
}
