/**
 * When `accept()` fails. A server must not stop for it, but the two causes
 * call for opposite answers:
 *
 * - A client that reset while it still waited in the backlog makes
 *   `accept()` fail (`ENOTCONN`, `ECONNABORTED`, ...). Not the server's fault
 *   and nothing to report: accept the next one at once.
 * - A process out of file descriptors or memory (`EMFILE`, `ENFILE`) fails
 *   again at once, in a busy loop, until clients leave: pause (5 ms, doubling
 *   up to 1 s), and say so at most once a second, then `accepting again`.
 *
 * @example
 * ```ts
 * import { AcceptFailures } from "./accept.ts";
 * const failures = new AcceptFailures(console.log);
 * const gone = Object.assign(new Error("Socket is not connected"), { code: "ENOTCONN" });
 * await failures.pauseAfter(gone); // returns at once, says nothing
 * failures.recovered();
 * ```
 *
 * @module
 */

/** Accept errors that mean only "that client left before we took it". */
const CLIENT_GONE = new Set(["ENOTCONN", "ECONNABORTED", "ECONNRESET", "EPROTO"]);
/** The longest pause after accept() fails for lack of file descriptors or memory. */
const MAX_PAUSE_MS = 1000;

/** One accept loop's failures: how long to pause, and what to log. */
export class AcceptFailures {
  readonly #log: (line: string) => void;
  #pauseMs = 0; // the current pause; 0 while accept() succeeds
  #count = 0; // failures since the last report
  #lastReport = -Infinity;
  #reported = false; // and no "accepting again" since

  /** Reports go to `log`. */
  constructor(log: (line: string) => void) {
    this.#log = log;
  }

  /** After `accept()` failed with `err`: resolves when it is time to try again. */
  async pauseAfter(err: unknown): Promise<void> {
    if (CLIENT_GONE.has((err as { code?: string }).code ?? "")) return;
    this.#pauseMs = Math.min(Math.max(this.#pauseMs * 2, 5), MAX_PAUSE_MS);
    this.#count++;
    const now = performance.now();
    if (now - this.#lastReport >= 1000) {
      this.#log(
        `accept failed ${this.#count} time(s): ${(err as Error).message}; ` +
          `pausing ${this.#pauseMs} ms for clients to leave`,
      );
      this.#count = 0;
      this.#lastReport = now;
      this.#reported = true;
    }
    await new Promise((resolve) => setTimeout(resolve, this.#pauseMs));
  }

  /** `accept()` succeeded. */
  recovered(): void {
    if (this.#pauseMs === 0) return;
    this.#pauseMs = 0;
    // The report clock is not reset: at its limit a server flaps (a client
    // leaves, the next is accepted, the one after fails), and must not log
    // each flap. The next report counts the failures since.
    if (!this.#reported) return;
    this.#log("accepting again");
    this.#reported = false;
  }
}
