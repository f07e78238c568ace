/**
 * What runs before a program exits: the {@linkcode beforeExit} hooks (log.ts flushes its queue
 * there), run by `runMain` (cli.ts) and `exitSoon` (signals.ts).
 *
 * @example
 * ```ts
 * import { beforeExit, runExitHooks } from "./exit.ts";
 * beforeExit(async () => console.log("flushed"));
 * console.log(await runExitHooks(100)); // flushed, then true
 * ```
 *
 * @module
 */

const hooks: ((ms: number) => Promise<unknown>)[] = [];

/** Runs `hook` (given the milliseconds it may take) before `exitSoon` and `runMain`'s exit. */
export function beforeExit(hook: (ms: number) => Promise<unknown>): void {
  hooks.push(hook);
}

/** Runs the `beforeExit` hooks for `ms` at most; true if they all finished. */
export async function runExitHooks(ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const done = await Promise.race([
    Promise.all(hooks.map((hook) => hook(ms))).then(() => true),
    new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), Math.max(0, ms))),
  ]);
  clearTimeout(timer);
  return done;
}
