/**
 * Asking the user, as the seeds (the Python originals) do with `input()`, in a way that also works when answers are piped:
 * what tcp_server.ts and tcp_client.ts ask when a flag is not given.
 *
 * @example
 * ```ts ignore
 * import { ask } from "./prompt.ts";
 * import { parsePort } from "../../lib/cli.ts";
 * const port = await ask("tcp_server", "Local port: ", parsePort, "a port from 0 to 65535");
 * ```
 *
 * @module
 */

import { usageError } from "../../lib/cli.ts";
import { LineReader, LineTooLongError, writeAll } from "../../lib/io.ts";

let stdinLines: LineReader | undefined;

/**
 * Prints `question`, reads stdin lines until `parse` accepts one (`prompt()` prints nothing from a
 * pipe). A bad or missing piped answer is a usage error (exit 2): nobody is there to correct it.
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
    const line = await stdinLines.readLine().catch((err) => {
      if (!(err instanceof LineTooLongError)) throw err;
      usageError(script, `the answer to '${question.trim()}' is longer than 4096 bytes`);
    });
    if (!interactive) console.log(); // the answer was not echoed: end the prompt's line
    if (line === null) usageError(script, `no answer to '${question.trim()}' (stdin ended)`);
    const answer = new TextDecoder().decode(line).trim();
    const value = parse(answer);
    if (value !== undefined) return value;
    if (!interactive) usageError(script, `invalid answer '${answer}': expected ${expected}`);
    console.log(`Please enter ${expected}.`);
  }
}
