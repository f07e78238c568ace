/**
 * Connecting when the server may not be up yet: retries with exponential
 * backoff and jitter.
 *
 * Only failures that waiting can cure are retried: refused (the server is
 * not listening yet), timed out, reset, unreachable. A name that does not
 * resolve or a missing permission fails at once, because the next attempt
 * would fail the same way.
 *
 * @example
 * ```ts
 * import { connectWithRetry } from "./retry.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const conn = await connectWithRetry({
 *   hostname: "127.0.0.1",
 *   port: listener.addr.port,
 *   attempts: 5,
 *   onRetry: ({ attempt, error, delayMs }) =>
 *     console.log(`attempt ${attempt} failed (${error.message}), retrying in ${delayMs} ms`),
 * });
 * conn.close();
 * listener.close();
 * ```
 *
 * @module
 */
import { paint, plural } from "./text.ts";

/** Why an attempt failed and what happens next. */
export interface RetryInfo {
  /** 1 for the first attempt. */
  attempt: number;
  /** The error of that attempt. */
  error: Error;
  /** The wait before the next attempt, or `undefined` after the last one. */
  delayMs: number | undefined;
}

/** Options for {@linkcode connectWithRetry}. */
export interface ConnectWithRetryOptions {
  /** Host name or address to connect to. */
  hostname: string;
  /** TCP port to connect to. */
  port: number;
  /** How many attempts in all, at least 1. Default 5. */
  attempts?: number;
  /** The wait after the first failure; it doubles after each. Default 200 ms. */
  baseDelayMs?: number;
  /** The longest wait between attempts. Default 5 s. */
  maxDelayMs?: number;
  /**
   * Give up on one attempt after this long (a full backlog or a firewall
   * that drops packets would keep it waiting for minutes); 0: never.
   * Default 10 s.
   */
  connectTimeoutMs?: number;
  /** Stops waiting and connecting at once; the promise rejects with its reason. */
  signal?: AbortSignal;
  /** Called after each failed attempt, e.g. to print it. */
  onRetry?: (info: RetryInfo) => void;
  /**
   * What to do when every attempt was refused, added to the final error,
   * e.g. `start it with deno task socket_server`.
   */
  hint?: string;
  /** The connect function; tests replace it. Default `Deno.connect`. */
  connect?: (options: Deno.ConnectOptions) => Promise<Deno.TcpConn>;
}

/** The longest timer: a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * True for connection errors that a later attempt may not meet again.
 *
 * @example
 * ```ts
 * import { isRetryable } from "./retry.ts";
 * console.log(isRetryable(new Deno.errors.ConnectionRefused("refused"))); // true
 * console.log(isRetryable(new Error("failed to lookup address information"))); // false
 * ```
 */
export function isRetryable(err: unknown): boolean {
  return err instanceof Deno.errors.ConnectionRefused ||
    err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.ConnectionAborted ||
    err instanceof Deno.errors.TimedOut ||
    err instanceof Deno.errors.NetworkUnreachable ||
    (err instanceof DOMException && err.name === "TimeoutError");
}

/**
 * The wait before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped, with
 * "equal jitter" (between half and all of it) so that many clients started
 * together do not retry in lockstep.
 *
 * @example
 * ```ts
 * import { backoffDelay } from "./retry.ts";
 * console.log(backoffDelay(3, 200, 5000, () => 1)); // 800
 * console.log(backoffDelay(3, 200, 5000, () => 0)); // 400
 * ```
 */
export function backoffDelay(
  attempt: number,
  baseDelayMs: number,
  maxDelayMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

/**
 * Connects to `hostname:port`, retrying refused, timed-out and reset
 * attempts with exponential backoff. Each attempt waits at most
 * `connectTimeoutMs`, and then fails as {@linkcode ConnectTimeoutError}.
 *
 * @throws {RetriesExhaustedError} after the last attempt fails.
 * @throws the error itself when it is not worth retrying (unknown host,
 *   missing permission), or the signal's reason when it aborts.
 *
 * @example
 * ```ts
 * import { connectWithRetry, RetriesExhaustedError } from "./retry.ts";
 * // Nothing listens on a port we just freed, so every attempt is refused.
 * const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const port = probe.addr.port;
 * probe.close();
 * try {
 *   await connectWithRetry({ hostname: "127.0.0.1", port, attempts: 2, baseDelayMs: 10 });
 * } catch (err) {
 *   console.log(err instanceof RetriesExhaustedError); // true
 * }
 * ```
 */
export async function connectWithRetry(
  options: ConnectWithRetryOptions,
): Promise<Deno.TcpConn> {
  const {
    hostname,
    port,
    attempts = 5,
    baseDelayMs = 200,
    maxDelayMs = 5000,
    connectTimeoutMs = 10_000,
    signal,
    onRetry,
    hint,
    connect = Deno.connect,
  } = options;
  const target = hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
  const limitMs = connectTimeoutMs > 0 ? Math.min(connectTimeoutMs, MAX_TIMER_MS) : undefined;
  for (let attempt = 1;; attempt++) {
    signal?.throwIfAborted();
    const timeout = limitMs === undefined ? undefined : AbortSignal.timeout(limitMs);
    const signals = [signal, timeout].filter((s) => s !== undefined);
    try {
      return await connect({
        hostname,
        port,
        signal: signals.length > 1 ? AbortSignal.any(signals) : signals[0],
      });
    } catch (err) {
      signal?.throwIfAborted();
      const error = timeout?.aborted ? new ConnectTimeoutError(target, limitMs!) : err as Error;
      if (!isRetryable(error)) throw error;
      const last = attempt >= attempts;
      const delayMs = last ? undefined : backoffDelay(attempt, baseDelayMs, maxDelayMs);
      onRetry?.({ attempt, error, delayMs });
      if (last) throw new RetriesExhaustedError(target, attempts, error, hint);
      await sleep(delayMs!, signal);
    }
  }
}

/**
 * Waits `ms` milliseconds; rejects with the signal's reason if it aborts first.
 *
 * @example
 * ```ts
 * import { sleep } from "./retry.ts";
 * await sleep(10);
 * ```
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A connect attempt got no answer in time (`--timeout`): a server whose
 * backlog is full, a firewall that drops packets, a host that is down.
 * A `Deno.errors.TimedOut`, so code that handles that handles this too.
 */
export class ConnectTimeoutError extends Deno.errors.TimedOut {
  /** The address that did not answer, `HOST:PORT`. */
  readonly target: string;
  /** How long the attempt waited, in milliseconds. */
  readonly timeoutMs: number;
  /** Builds the error for an attempt at `target` that waited `timeoutMs`. */
  constructor(target: string, timeoutMs: number) {
    super(`no answer from ${target} within ${timeoutMs / 1000} s (--timeout)`);
    this.name = "ConnectTimeoutError";
    this.target = target;
    this.timeoutMs = timeoutMs;
  }
}

/**
 * Every connection attempt failed; `cause` is the last attempt's error. When
 * it was refused, the message asks whether the server runs, and adds `hint`;
 * when it timed out, it says how long each attempt waited.
 */
export class RetriesExhaustedError extends Error {
  /** How many attempts were made. */
  readonly attempts: number;
  /** Builds the error for `attempts` failed attempts at `target`. */
  constructor(target: string, attempts: number, cause: Error, hint?: string) {
    const tries = plural(attempts, "attempt");
    const why = cause instanceof ConnectTimeoutError
      ? `no answer within ${cause.timeoutMs / 1000} s (--timeout)` // the target is named already
      : cause.message;
    super(
      cause instanceof Deno.errors.ConnectionRefused
        ? `connection refused by ${target} after ${tries}: is the server running?` +
          (hint ? ` ${hint}` : "")
        : `could not connect to ${target} after ${tries}: ${why}`,
      { cause },
    );
    this.name = "RetriesExhaustedError";
    this.attempts = attempts;
  }
}

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
 * import { ATTEMPTS_FLAG } from "./retry.ts";
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
 * import { reportAttempt } from "./retry.ts";
 * const onRetry = reportAttempt(5, (line) => console.log(line));
 * onRetry({ attempt: 1, error: new Error("Connection refused"), delayMs: 200 });
 * // attempt 1/5 failed: Connection refused; retrying in 200 ms
 * ```
 */
export function reportAttempt(
  attempts: number,
  print: (line: string) => void = (line) => console.error(paint("dim", line)),
): (info: RetryInfo) => void {
  return ({ attempt, error, delayMs }) =>
    print(
      `attempt ${attempt}/${attempts} failed: ${error.message}` +
        (delayMs === undefined ? "" : `; retrying in ${delayMs} ms`),
    );
}
