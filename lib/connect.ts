/**
 * What the clients that retry share around `connectWithRetry`
 * (retry.ts): the `--attempts` flag, and the status line each failed
 * attempt prints. The call itself stays in the script, where a reader sees it.
 *
 * @example
 * ```ts
 * import { ATTEMPTS_FLAG, reportAttempt } from "./connect.ts";
 * import { parseCli } from "./cli.ts";
 * import { connectWithRetry } from "./retry.ts";
 *
 * const args = parseCli({
 *   name: "demo",
 *   summary: "Connects.",
 *   options: { attempts: ATTEMPTS_FLAG },
 *   args: ["--attempts", "3"],
 * });
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const conn = await connectWithRetry({
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 *   attempts: args.attempts,
 *   onRetry: reportAttempt(args.attempts), // attempt 1/3 failed: ...; retrying in N ms
 * });
 * conn.close();
 * listener.close();
 * ```
 *
 * @module
 */

import type { RetryInfo } from "./retry.ts";
import { logError } from "./log.ts";
import { paint } from "./text.ts";

export type { RetryInfo };

/** The spec of the `--attempts` flag: {@linkcode ATTEMPTS_FLAG}. */
export type AttemptsFlag = {
  kind: "integer";
  min: number;
  max: number;
  default: number;
  help: string;
};

/**
 * The `--attempts` flag of a client that retries: 1 to 100, default 5.
 *
 * @example
 * ```ts
 * import { ATTEMPTS_FLAG } from "./connect.ts";
 * import { parseCli } from "./cli.ts";
 * const args = parseCli({ name: "demo", summary: "", options: { attempts: ATTEMPTS_FLAG }, args: [] });
 * console.log(args.attempts); // 5
 * ```
 */
export const ATTEMPTS_FLAG: AttemptsFlag = {
  kind: "integer",
  min: 1,
  max: 100,
  default: 5,
  help: "connection attempts before giving up",
};

/**
 * An `onRetry` for `connectWithRetry` that says what failed and
 * what comes next: `attempt 1/5 failed: Connection refused (os error 111);
 * retrying in 213 ms`, or for an attempt that timed out `no answer from
 * 127.0.0.1:8888 within 2 s (--timeout)`. A dim line on stderr: every client
 * here writes its attempt lines there, so that stdout keeps only its results
 * (`print` is for tests).
 *
 * @example
 * ```ts
 * import { reportAttempt } from "./connect.ts";
 * const onRetry = reportAttempt(5, (line) => console.log(line));
 * onRetry({ attempt: 1, error: new Error("Connection refused"), delayMs: 200 });
 * // attempt 1/5 failed: Connection refused; retrying in 200 ms
 * ```
 */
export function reportAttempt(
  attempts: number,
  print: (line: string) => void = (line) => logError(paint("dim", line)),
): (info: RetryInfo) => void {
  return ({ attempt, error, delayMs }) =>
    print(
      `attempt ${attempt}/${attempts} failed: ${error.message}` +
        (delayMs === undefined ? "" : `; retrying in ${delayMs} ms`),
    );
}
