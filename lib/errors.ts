/**
 * The errors the lib throws, and every sentence about an error that more
 * than one place says, in one place: the error classes, the one-line advice
 * a script prints for any failure ({@linkcode describeError}), why `listen`
 * failed ({@linkcode listenErrorText}), the log line a server writes when one
 * client's connection ends badly ({@linkcode explainClientError}), and the
 * `ERR ...` replies the servers share. A message only one script says (the
 * chat room's `ERR` lines, a usage error about one flag) stays in that
 * script, where its reader sees it. This module imports nothing, so every
 * other module can use it.
 *
 * @example
 * ```ts
 * import { describeError } from "./errors.ts";
 * const err = new Deno.errors.ConnectionRefused("Connection refused (os error 111)");
 * console.log(describeError(err, "127.0.0.1:8888"));
 * // connection refused by 127.0.0.1:8888: is the server running?
 * ```
 *
 * @module
 */

const encoder = new TextEncoder();
/** What a line server answers to a line over its limit, before it hangs up. */
export const LINE_TOO_LONG: Uint8Array = encoder.encode("ERR line too long\n");
/** What a server at its `--max-conns` answers a new client, before it hangs up. */
export const SERVER_BUSY: Uint8Array = encoder.encode("ERR server busy\n");

/** A failure the user can fix; `runMain` prints its message only. */
export class CliError extends Error {
  /** The process exit code: 2 for bad usage, 1 for a runtime failure. */
  readonly exitCode: number;
  /** Builds an error printed as `error: message`. */
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = "CliError";
    this.exitCode = exitCode;
  }
}

/** The peer closed the connection before the bytes we needed arrived. */
export class UnexpectedEofError extends Error {
  /** How many bytes arrived before the end of the stream. */
  readonly received: number;
  /** How many bytes were wanted. */
  readonly expected: number;
  /** Builds the error for `received` of `expected` bytes. */
  constructor(received: number, expected: number) {
    super(`connection closed after ${received} of ${expected} bytes`);
    this.name = "UnexpectedEofError";
    this.received = received;
    this.expected = expected;
  }
}

/** The peer made no progress for too long (see `IdleClock` in deadline.ts). */
export class ReadTimeoutError extends Error {
  /** The silence that was allowed, in milliseconds. */
  readonly timeoutMs: number;
  /** Builds the error for a silence of `timeoutMs` milliseconds. */
  constructor(timeoutMs: number) {
    super(`no data for ${timeoutMs / 1000} s`);
    this.name = "ReadTimeoutError";
    this.timeoutMs = timeoutMs;
  }
}

/** A line grew past the limit before its `\n` arrived. */
export class LineTooLongError extends Error {
  /** The limit that was exceeded, in bytes. */
  readonly maxLine: number;
  /** Builds the error for the limit `maxLine`. */
  constructor(maxLine: number) {
    super(`line longer than ${maxLine} bytes`);
    this.name = "LineTooLongError";
    this.maxLine = maxLine;
  }
}

/** The stream ended in the middle of a line: a cut-off reply is not a reply. */
export class TruncatedLineError extends Error {
  /** The bytes of the unfinished line. */
  readonly partial: Uint8Array;
  /** Builds the error for the unfinished line `partial`. */
  constructor(partial: Uint8Array) {
    super(
      `the stream ended in the middle of a line (${
        plural(partial.length, "byte")
      } without a newline)`,
    );
    this.name = "TruncatedLineError";
    this.partial = partial;
  }
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

/** `1 client`, `2 clients`. */
export function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

const PICK_ANOTHER_PORT =
  "stop the other server, or pick another --port (--port 0 takes a free one)";

/**
 * What a client refused by `port` advises: `start it with deno task NAME`,
 * plus `--port N` unless `port` is that server's default, so that the server
 * it suggests is the one it will find.
 *
 * @example
 * ```ts
 * import { startHint } from "./errors.ts";
 * console.log(startHint("socket_server", 9000, 8888)); // start it with deno task socket_server --port 9000
 * ```
 */
export function startHint(server: string, port: number, defaultPort?: number): string {
  return `start it with deno task ${server}${port === defaultPort ? "" : ` --port ${port}`}`;
}

/**
 * Why `Deno.listen` failed on `hostname:port`, in words a person can act on.
 * For a port in use, `accepted` is what a connect to it found: false (refused)
 * means no server listens there, and the port is held by a connection, most
 * likely one still closing (TIME-WAIT): on Linux, a server's port in the
 * range lent to clients (32768-60999) may have been a client's a moment ago.
 *
 * @example
 * ```ts
 * import { listenErrorText } from "./errors.ts";
 * console.log(listenErrorText(new Deno.errors.AddrInUse("in use"), "127.0.0.1", 8888));
 * // port 8888 is already in use on 127.0.0.1: stop the other server, or pick another --port (--port 0 takes a free one)
 * console.log(listenErrorText(new Deno.errors.AddrInUse("in use"), "127.0.0.1", 50000, false));
 * // port 50000 on 127.0.0.1 is held by a connection, most likely one still closing (TIME-WAIT), not by a server: ...
 * ```
 */
export function listenErrorText(
  err: unknown,
  hostname: string,
  port: number,
  accepted?: boolean,
): string {
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  if (err instanceof Deno.errors.AddrInUse && accepted === false) {
    return `port ${port} on ${host} is held by a connection, most likely one still closing ` +
      `(TIME-WAIT), not by a server: wait a minute, or pick another --port ` +
      `(--port 0 takes a free one); see: ss -tan | grep :${port}`;
  }
  if (err instanceof Deno.errors.AddrInUse) {
    return `port ${port} is already in use on ${host}: ${PICK_ANOTHER_PORT}`;
  }
  if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
    return `no permission to listen on ${host}:${port}: run with --allow-net=${host}`;
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return `cannot listen on ${host}:${port}: ${hostname} is not an address of this machine`;
  }
  return `cannot listen on ${host}:${port}: ${firstLine(err)}`;
}

/**
 * Explains a failure in one line: what failed and what to try.
 *
 * @example
 * ```ts
 * import { describeError, ReadTimeoutError } from "./errors.ts";
 * console.log(describeError(new ReadTimeoutError(2000), "127.0.0.1:8888"));
 * // no reply from 127.0.0.1:8888 within 2 s (--timeout)
 * ```
 */
export function describeError(err: unknown, target = ""): string {
  const at = target ? ` ${target}` : "";
  if (err instanceof CliError) return err.message;
  if (err instanceof Deno.errors.AddrInUse) {
    return `address${at} is already in use: ${PICK_ANOTHER_PORT}`;
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return `cannot use address${at}: it is not an address of this machine`;
  }
  if (err instanceof Deno.errors.ConnectionRefused) {
    return `connection refused${at ? ` by${at}` : ""}: is the server running?`;
  }
  if (err instanceof Deno.errors.ConnectionReset) return `connection reset by peer${at}`;
  if (err instanceof ConnectTimeoutError) return err.message;
  if (err instanceof Deno.errors.TimedOut) return `timed out${at}`;
  if (err instanceof ReadTimeoutError) {
    return `no reply${at ? ` from${at}` : ""} within ${err.timeoutMs / 1000} s (--timeout)`;
  }
  if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
    const message = firstLine(err);
    const flag = message.match(/--allow-\w+/)?.[0];
    const what = message.match(/access to "([^"]*)"/)?.[1];
    const hint = flag && what ? ` (run with ${flag}=${what.replace(/:\d+$/, "")})` : "";
    return `permission missing: ${message.split(",")[0]}${hint}`;
  }
  // An unknown host is a plain Error, not one of Deno.errors.
  if (
    /lookup address|not known|nodename nor servname|No address associated/i.test(firstLine(err))
  ) {
    return `cannot resolve host${at}: check the name, or the network`;
  }
  return `${firstLine(err)}${at ? ` (${target})` : ""}`;
}

/**
 * Says in a few words why a client's connection ended badly, for a server's log.
 *
 * @example
 * ```ts
 * import { explainClientError } from "./errors.ts";
 * console.log(explainClientError(new Deno.errors.ConnectionReset("reset"))); // connection reset by client
 * ```
 */
export function explainClientError(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionReset) return "connection reset by client";
  if (err instanceof Deno.errors.BrokenPipe) return "client went away before the reply was sent";
  if (err instanceof ReadTimeoutError) return `idle for ${err.timeoutMs / 1000} s, disconnected`;
  if (err instanceof Deno.errors.Interrupted) return "connection closed";
  if (err instanceof LineTooLongError) return `sent a ${err.message}, disconnected`;
  return firstLine(err);
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0];
}
