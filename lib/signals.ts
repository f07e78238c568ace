/**
 * Ctrl+C and SIGTERM for a program that must stop cleanly: the first signal
 * asks it to stop, a second one a moment later exits at once.
 *
 * @example
 * ```ts
 * import { onStopSignal } from "./signals.ts";
 * const remove = onStopSignal(() => console.log("stopping"));
 * remove();
 * ```
 *
 * @module
 */

/** Two signals closer together than this are one Ctrl+C, delivered twice. */
const SAME_SIGNAL_MS = 300;

/**
 * Calls `stop` on the first SIGINT or SIGTERM, and exits at once (code 0) on
 * a second one a moment later: a second Ctrl+C means "now". Signals that
 * arrive together count as one: under `deno task`, one Ctrl+C reaches the
 * script twice (the terminal sends it to the whole process group, and the
 * task runner forwards its own copy). Returns a function that removes the
 * listeners.
 *
 * @example
 * ```ts
 * import { onStopSignal } from "./signals.ts";
 * const remove = onStopSignal(() => console.log("stopping"));
 * remove();
 * ```
 */
export function onStopSignal(stop: () => void): () => void {
  let first: number | undefined;
  const onSignal = () => {
    const now = performance.now();
    if (first === undefined) {
      first = now;
      stop();
    } else if (now - first > SAME_SIGNAL_MS) {
      Deno.exit(0);
    }
  };
  // Windows has no SIGTERM.
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  return () => {
    for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  };
}
