/**
 * What socket_client and tls_client send: the `-m` messages, else each line of stdin when it is a
 * pipe or a file, else (a terminal, or empty input) one sample reading. Shared by the two clients,
 * which differ only in how they connect.
 *
 * @example
 * ```ts ignore
 * import { checkMessages, messages } from "./socket_client/messages.ts";
 * checkMessages("socket_client", ["hello"]);
 * for await (const line of messages(["hello"])) console.log(line.length); // 5
 * ```
 *
 * @module
 */

import { CliError, usageError } from "../../lib/cli.ts";
import { LineReader, LineTooLongError } from "../../lib/io.ts";
import { showBytes } from "../../lib/text.ts";

/** Longest stdin line sent; a reply is this plus the server's prefix. */
export const MAX_INPUT_LINE = 64 * 1024;
/** Longest reply taken. */
export const MAX_REPLY = MAX_INPUT_LINE + 1024;
const SAMPLE_READING = `sensor-1 temperature=21.5C at ${new Date().toISOString()}`;
const encoder = new TextEncoder();

/** A usage error (exit 2) for a `--message` that holds a line break: a message is one line. */
export function checkMessages(script: string, given: string[]): void {
  for (const m of given) {
    if (/[\r\n]/.test(m)) {
      usageError(
        script,
        `--message '${showBytes(encoder.encode(m))}' holds a line break: ` +
          `a message is one line; give one --message per line`,
      );
    }
  }
}

/** The messages to send, read lazily so a long pipe is streamed, not loaded. */
export async function* messages(given: string[]): AsyncGenerator<Uint8Array> {
  if (given.length > 0) {
    for (const m of given) yield encoder.encode(m);
    return;
  }
  if (!Deno.stdin.isTerminal()) {
    const input = new LineReader(Deno.stdin, { maxLine: MAX_INPUT_LINE });
    for (let n = 1;; n++) {
      const line = await input.readLine().catch((err) => {
        if (!(err instanceof LineTooLongError)) throw err;
        throw new CliError(`input line ${n} is longer than ${MAX_INPUT_LINE} bytes`);
      });
      if (line === null) {
        if (n > 1) return;
        break; // empty input: send the sample
      }
      yield line;
    }
  }
  yield encoder.encode(SAMPLE_READING);
}
