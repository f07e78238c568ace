/**
 * Connecting while a server may still be starting: retries with exponential backoff and jitter,
 * only for what waiting may cure (refused, reset, aborted, timed out, unreachable); an unknown
 * host or a missing permission fails at once.
 *
 * @example
 * ```ts
 * import { connectWithRetry, reportAttempt } from "./retry.ts";
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * using _conn = await connectWithRetry({ ...listener.addr, onRetry: reportAttempt(5) });
 * ```
 *
 * @module
 */

import { formatAddress, paint, plural } from "./text.ts";

/** A failed attempt (1 for the first), its error, the wait before the next (none after the last). */
export type RetryInfo = { attempt: number; error: Error; delayMs: number | undefined };

/** Options for {@linkcode connectWithRetry}; times are in milliseconds; `C` what `connect` gives. */
export interface ConnectWithRetryOptions<C = Deno.TcpConn> {
  /** The server's host name or address. */
  hostname: string;
  /** Its TCP port. */
  port: number;
  /** How many attempts in all, at least 1. Default 5. */
  attempts?: number;
  /** The wait after the first failure; it doubles after each. Default 200. */
  baseDelayMs?: number;
  /** The longest wait between attempts. Default 5000. */
  maxDelayMs?: number;
  /** Ends a stalled attempt after this; 0: never. Default 10 000. */
  connectTimeoutMs?: number;
  /** Stops waiting and connecting at once; rejects with its reason. */
  signal?: AbortSignal;
  /** Told of each failed attempt, e.g. `reportAttempt(5)`. */
  onRetry?: (info: RetryInfo) => void;
  /** Follows a refusal in the final error: how to start the server. */
  hint?: string;
  /** The connect call, `Deno.connect` unless told (a script passes its own, tests a fake). */
  connect?: (options: Deno.ConnectOptions) => Promise<C>;
}

/** True for connection errors that a later attempt may not meet again. */
export function isRetryable(err: unknown): boolean {
  const e = Deno.errors;
  return err instanceof e.ConnectionRefused || err instanceof e.ConnectionReset ||
    err instanceof e.ConnectionAborted || err instanceof e.NetworkUnreachable ||
    err instanceof e.TimedOut || (err instanceof DOMException && err.name === "TimeoutError");
}

/** `base * 2^(attempt-1)` capped, then half to all of it, so clients do not retry in lockstep. */
export function backoffDelay(
  attempt: number,
  baseDelayMs: number,
  maxDelayMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}

/** Connects, retrying as {@linkcode isRetryable} says; then a {@linkcode RetriesExhaustedError}. */
export async function connectWithRetry<C = Deno.TcpConn>(
  options: ConnectWithRetryOptions<C>,
): Promise<C> {
  const { hostname, port, attempts = 5, baseDelayMs: base = 200, maxDelayMs: max = 5000 } = options;
  const { connectTimeoutMs = 10_000, signal, onRetry, hint } = options;
  const connect = options.connect ??
    (Deno.connect as unknown as (o: Deno.ConnectOptions) => Promise<C>);
  const target = formatAddress({ transport: "tcp", hostname, port });
  const limitMs = Math.min(connectTimeoutMs, 2 ** 31 - 1); // a longer timer would fire at once
  for (let attempt = 1;; attempt++) {
    signal?.throwIfAborted();
    const timeout = limitMs > 0 ? AbortSignal.timeout(limitMs) : undefined;
    try {
      const both = signal && timeout ? AbortSignal.any([signal, timeout]) : signal ?? timeout;
      return await connect({ hostname, port, signal: both });
    } catch (err) {
      signal?.throwIfAborted(); // the caller's reason, not the error the abort caused
      const error = timeout?.aborted ? new ConnectTimeoutError(target, limitMs) : err as Error;
      if (!isRetryable(error)) throw error;
      const delayMs = attempt < attempts ? backoffDelay(attempt, base, max) : undefined;
      onRetry?.({ attempt, error, delayMs });
      if (delayMs === undefined) throw new RetriesExhaustedError(target, attempts, error, hint);
      await sleep(delayMs, signal);
    }
  }
}

/** Waits `ms` milliseconds; rejects with the signal's reason if it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A connect attempt got no answer in time; a `Deno.errors.TimedOut`, so code for that fits. */
export class ConnectTimeoutError extends Deno.errors.TimedOut {
  /** Builds it for an attempt at `target` (`HOST:PORT`) that waited `timeoutMs`. */
  constructor(readonly target: string, readonly timeoutMs: number) {
    super(`no answer from ${target} within ${timeoutMs / 1000} s (--timeout)`);
    this.name = "ConnectTimeoutError";
  }
}

/** Every attempt failed; `cause` is the last one's error. A refusal asks if the server runs. */
export class RetriesExhaustedError extends Error {
  /** Builds the error for `attempts` failed attempts at `target`; `hint` follows a refusal. */
  constructor(target: string, readonly attempts: number, cause: Error, hint?: string) {
    const at = `${target} after ${plural(attempts, "attempt")}`;
    super(
      cause instanceof Deno.errors.ConnectionRefused
        ? `connection refused by ${at}: is the server running?` + (hint ? ` ${hint}` : "")
        : cause instanceof ConnectTimeoutError // its own message names the target again
        ? `could not connect to ${at}: no answer within ${cause.timeoutMs / 1000} s (--timeout)`
        : `could not connect to ${at}: ${cause.message}`,
      { cause },
    );
    this.name = "RetriesExhaustedError";
  }
}

/** The `--attempts` flag of a client that retries: 1 to 100, default 5. */
export const ATTEMPTS_FLAG = {
  kind: "integer" as const,
  min: 1,
  max: 100,
  default: 5,
  help: "connection attempts before giving up",
};

/** An `onRetry` that prints `attempt 1/5 failed: WHY; retrying in 213 ms` (`print`: for tests). */
export function reportAttempt(
  attempts: number,
  print: (line: string) => void = (line) => console.error(paint("dim", line, "stderr")), // stdout: results
): (info: RetryInfo) => void {
  return ({ attempt, error, delayMs }) => {
    const next = delayMs === undefined ? "" : `; retrying in ${delayMs} ms`;
    print(`attempt ${attempt}/${attempts} failed: ${error.message}${next}`);
  };
}
