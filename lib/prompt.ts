/**
 * Asking the user, as the seeds do with `input()`, in a way that also works
 * when the answers are piped in.
 *
 * @example
 * ```ts ignore
 * import { ask } from "./prompt.ts";
 * import { parsePort } from "./cli.ts";
 * const port = await ask("tcp_server", "Enter the local port: ", parsePort, "a port from 0 to 65535");
 * ```
 *
 * @module
 */

import { usageError } from "./cli.ts";
import { LineReader, writeAll } from "./io.ts";

let stdinLines: LineReader | undefined;

/**
 * Asks a question and reads the answer from standard input, for scripts that
 * prompt like the seeds do.
 *
 * Deno's `prompt()` prints nothing and returns `null` when stdin is a pipe,
 * so this prints the question itself and reads one line from `Deno.stdin`:
 * `printf '8888\n' | deno task tcp_server` answers the prompt. An answer that
 * `parse` rejects is asked again on a terminal; from a pipe it is a usage
 * error (exit 2), since nobody is there to correct it.
 *
 * @example
 * ```ts ignore
 * import { ask } from "./prompt.ts";
 * import { parsePort } from "./cli.ts";
 * const port = await ask("tcp_server", "Enter the local port: ", parsePort, "a port from 0 to 65535");
 * ```
 */
export async function ask<T>(
  script: string,
  question: string,
  parse: (answer: string) => T | undefined,
  expected: string,
): Promise<T> {
  stdinLines ??= new LineReader(Deno.stdin, { maxLine: 4096 });
  const interactive = Deno.stdin.isTerminal();
  while (true) {
    await writeAll(Deno.stdout, new TextEncoder().encode(question));
    const line = await stdinLines.readLine();
    if (!interactive) console.log(); // the answer was not echoed: end the prompt's line
    if (line === null) usageError(script, `no answer to '${question.trim()}' (stdin ended)`);
    const answer = new TextDecoder().decode(line).trim();
    const value = parse(answer);
    if (value !== undefined) return value;
    if (!interactive) usageError(script, `invalid answer '${answer}': expected ${expected}`);
    console.log(`Please enter ${expected}.`);
  }
}
