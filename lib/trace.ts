/**
 * Every read and write on one connection, printed as it happens: what
 * `--trace` shows. It exists because the bugs TCP invites are invisible in
 * the code. A read is not a message: `printf 'hel'`, a pause, then
 * `printf 'lo\nwor'` arrive as two reads, the second holding the end of one
 * line and the start of the next, and two lines sent together arrive as one
 * read. A write is not all of it either: past a full send buffer, `write()`
 * takes part of the bytes and says how many (`write took 65536 of 100000 B`),
 * which is why every writer here loops (`writeAll`). With the trace on, a
 * learner sees the stream as the program sees it, one line per event, on
 * stderr:
 *
 * ```text
 * trace 127.0.0.1:41234 +0.412s read 3 B "hel"
 * trace 127.0.0.1:41234 +1.415s read 6 B "lo\nwor"
 * trace 127.0.0.1:41234 +1.416s write 13 B "OK ... hello\n"
 * trace 127.0.0.1:41234 +1.420s read EOF (the peer sent FIN: no more bytes from it)
 * trace 127.0.0.1:41234 +1.421s close
 * ```
 *
 * The address is the peer's, the time counts from the moment tracing began
 * on the connection (right after `accept()` or `connect()`), and the bytes
 * are shown escaped (`showBytes`), at most 64 of them. A script traces with
 * `if (args.trace) traceConn(conn)`: without the flag the connection is not
 * touched, so tracing costs nothing when it is off. With it, every event is
 * a line on stderr, written as log.ts writes: in order, without ever making
 * the program wait for its reader (lines that a reader who does not read
 * would have to hold are dropped and counted), and flushed before a script
 * exits. A tool for learning and debugging: a busy server makes many lines.
 *
 * @example Watch a line arrive in two reads
 * ```ts
 * import { traceConn } from "./trace.ts";
 * import { flushLogs } from "./log.ts";
 *
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const server = traceConn(await listener.accept()); // its lines go to stderr
 * const buf = new Uint8Array(1024);
 * await client.write(new TextEncoder().encode("hel"));
 * await server.read(buf); // trace 127.0.0.1:PORT +0.001s read 3 B "hel"
 * await client.write(new TextEncoder().encode("lo\nwor"));
 * await server.read(buf); // trace 127.0.0.1:PORT +0.002s read 6 B "lo\nwor"
 * await client.closeWrite();
 * await server.read(buf); // trace ... read EOF (the peer sent FIN: no more bytes from it)
 * server.close(); // trace ... close
 * client.close();
 * listener.close();
 * await flushLogs(); // the lines go out in the background: let them before the program ends
 * ```
 *
 * @module
 */

import { logError } from "./log.ts";
import { formatAddress, showBytes } from "./text.ts";

/** The spec of the `--trace` flag: {@linkcode TRACE_FLAG}. */
export type TraceFlag = { kind: "boolean"; help: string };

/**
 * The `--trace` flag every script takes. A script that gets it passes each
 * connection to `traceConn` (trace.ts) right after `accept()` or `connect()`,
 * and every read and write on it is printed to stderr as it happens.
 *
 * @example
 * ```ts
 * import { parseCli } from "./cli.ts";
 * import { TRACE_FLAG } from "./trace.ts";
 * const args = parseCli({ name: "demo", summary: "", options: { trace: TRACE_FLAG }, args: [] });
 * console.log(args.trace); // false
 * ```
 */
export const TRACE_FLAG: TraceFlag = {
  kind: "boolean",
  help: "print every read and write on the wire to stderr",
};

/** The most bytes of one read or write a trace line shows. */
export const TRACE_PREVIEW = 64;

/** What {@linkcode traceConn} wraps: the calls of a `Deno.Conn` that move bytes or end them. */
export interface TraceableConn {
  /** The peer, shown in every line. */
  readonly remoteAddr: Deno.Addr;
  /** Reads up to `p.byteLength` bytes; `null` at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some prefix of `p`; returns how many bytes. */
  write(p: Uint8Array): Promise<number>;
  /** Sends FIN: no more bytes from us. */
  closeWrite(): Promise<void>;
  /** Closes both directions. */
  close(): void;
}

/** Options for {@linkcode traceConn}. */
export interface TraceOptions {
  /** Where each line goes (default: `logError` of log.ts, i.e. stderr, never waiting). */
  print?: (line: string) => void;
  /** The clock, in milliseconds (default `performance.now`). */
  now?: () => number;
}

/**
 * Makes `conn` print a line for each read (its bytes, or EOF), each write
 * (as it starts: the peer may read the bytes before the call returns; a * short one is followed by `write took N of M B`), each failure, and
 * `closeWrite` and `close` (also as they start),
 * and returns the same object: its `read`, `write`, `closeWrite` and `close`
 * are replaced by tracing versions, so whatever already holds the
 * connection (a `LineReader`, `OpenClients`, an idle clock) is traced
 * too. A close that fails because the connection is already closed prints
 * nothing. (`conn.readable` and `conn.writable` bypass these calls, and are
 * not traced.)
 *
 * @example A short write, as a full send buffer makes it
 * ```ts
 * import { traceConn } from "./trace.ts";
 * const conn = traceConn({
 *   remoteAddr: { transport: "tcp", hostname: "::1", port: 8888 },
 *   read: () => Promise.resolve(null),
 *   write: (p: Uint8Array) => Promise.resolve(Math.min(p.length, 4)),
 *   closeWrite: () => Promise.resolve(),
 *   close: () => {},
 * }, { print: (line) => console.log(line), now: () => 0 });
 * await conn.write(new TextEncoder().encode("OK ... hello\n"));
 * // trace [::1]:8888 +0.000s write 13 B "OK ... hello\n"
 * // trace [::1]:8888 +0.000s write took 4 of 13 B: the send buffer is full
 * ```
 */
export function traceConn<C extends TraceableConn>(conn: C, options: TraceOptions = {}): C {
  const print = options.print ?? logError;
  const now = options.now ?? (() => performance.now());
  const start = now();
  const peer = formatAddress(conn.remoteAddr);
  const say = (event: string) =>
    print(`trace ${peer} +${((now() - start) / 1000).toFixed(3)}s ${event}`);
  const { read, write, closeWrite, close } = conn;

  conn.read = (p: Uint8Array): Promise<number | null> =>
    read.call(conn, p).then((n) => {
      say(
        n === null
          ? "read EOF (the peer sent FIN: no more bytes from it)"
          : `read ${n} B ${quoted(p.subarray(0, n))}`,
      );
      return n;
    }, (err) => {
      say(`read failed: ${whyFailed(err)}`);
      throw err;
    });

  conn.write = (p: Uint8Array): Promise<number> => {
    // Said before the bytes go: the peer may read them before this call returns.
    say(`write ${p.length} B ${quoted(p)}`);
    return write.call(conn, p).then((n) => {
      if (n < p.length) say(`write took ${n} of ${p.length} B: the send buffer is full`);
      return n;
    }, (err) => {
      say(`write failed: ${whyFailed(err)}`);
      throw err;
    });
  };

  // Said before the call, as a write is: the peer may see the FIN before it returns.
  conn.closeWrite = (): Promise<void> => {
    say("closeWrite (we send FIN)");
    return closeWrite.call(conn).catch((err) => {
      say(`closeWrite failed: ${whyFailed(err)}`);
      throw err;
    });
  };

  let closed = false;
  conn.close = (): void => {
    if (!closed) say("close"); // a second close throws, and there is nothing to report
    closed = true;
    close.call(conn);
  };
  return conn;
}

/**
 * The bytes, escaped, cut to {@linkcode TRACE_PREVIEW}, in double quotes. A
 * peer's own `\` and `"` are escaped too, so that its four characters `\x1b`
 * cannot pass for an escaped byte, nor a `"` for the end of the quote.
 */
function quoted(bytes: Uint8Array): string {
  let end = Math.min(bytes.length, TRACE_PREVIEW);
  while (end > 0 && end < bytes.length && (bytes[end] & 0xc0) === 0x80) end--; // whole characters
  const shown = bytes.subarray(0, end);
  let out = "";
  let start = 0;
  for (let i = 0; i < shown.length; i++) {
    if (shown[i] !== BACKSLASH && shown[i] !== QUOTE) continue;
    // Neither byte occurs inside a UTF-8 sequence: cutting here splits no character.
    out += showBytes(shown.subarray(start, i)) + (shown[i] === BACKSLASH ? "\\\\" : '\\"');
    start = i + 1;
  }
  out += showBytes(shown.subarray(start));
  return end < bytes.length ? `"${out}"... (${bytes.length} bytes)` : `"${out}"`;
}

const BACKSLASH = 0x5c;
const QUOTE = 0x22;

/** Why a call failed, in a few words. */
function whyFailed(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionReset) return "connection reset (RST)";
  if (err instanceof Deno.errors.BrokenPipe) return "broken pipe (the peer is gone)";
  if (err instanceof Deno.errors.Interrupted) return "interrupted (we closed the connection)";
  if (err instanceof Deno.errors.BadResource) return "the connection is closed";
  if (err instanceof Deno.errors.NotConnected) return "not connected";
  if (err instanceof Deno.errors.TimedOut) return "timed out";
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return showBytes(new TextEncoder().encode(message.split("\n")[0]), 200);
}
