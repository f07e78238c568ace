/**
 * `--trace`: every read and write on one connection, printed as it happens, because the bugs TCP
 * invites are invisible in the code. `printf 'hel'`, a pause, then `printf 'lo\nwor'` may arrive
 * as two reads, the second holding the end of one line and the start of the next; a write past a
 * full send buffer takes part of the bytes (`write took 65536 of 100000 B: the send buffer is
 * full`). The time counts from `accept()` or `connect()`; bytes are escaped, 64 at most:
 *
 * ```text
 * trace 127.0.0.1:41234 +0.412s read 3 B "hel"
 * trace 127.0.0.1:41234 +1.415s read 6 B "lo\nwor"
 * trace 127.0.0.1:41234 +1.416s write 13 B "OK ... hello\n"
 * trace 127.0.0.1:41234 +1.420s read EOF (the peer sent FIN: no more bytes from it)
 * ```
 *
 * @example
 * ```ts
 * import { traceConn } from "./trace.ts";
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * const server = traceConn(await listener.accept()); // its lines go to stderr
 * await client.write(new TextEncoder().encode("hel"));
 * await server.read(new Uint8Array(1024)); // trace 127.0.0.1:PORT +0.001s read 3 B "hel"
 * [server, client, listener].forEach((c) => c.close()); // trace ... close
 * ```
 *
 * @module
 */

import { formatAddress, showBytes } from "./text.ts";

/** The `--trace` flag every script takes. */
export const TRACE_FLAG: { kind: "boolean"; help: string } = {
  kind: "boolean",
  help: "print every read and write on the wire to stderr",
};

/** What {@linkcode traceConn} wraps: the calls of a `Deno.Conn` that move bytes or end them. */
export type TraceableConn = Pick<
  Deno.Conn,
  "remoteAddr" | "read" | "write" | "closeWrite" | "close"
>;

/** Options for {@linkcode traceConn}. */
export interface TraceOptions {
  /** Where each line goes (default `console.error`; a server passes `logError`, which never waits). */
  print?: (line: string) => void;
  /** The clock in ms (default `performance.now`). */
  now?: () => number;
}

/**
 * Makes `conn` print a line for each read, write (as it starts), failure, `closeWrite` and `close`,
 * and returns it: whatever holds it is traced too. (`conn.readable` and `conn.writable` are not.)
 */
export function traceConn<C extends TraceableConn>(conn: C, options: TraceOptions = {}): C {
  const print = options.print ?? console.error;
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
 * One read's or write's bytes for a trace line: escaped (`showBytes`), cut at 64 bytes between
 * whole characters, quoted; a peer's own `"` escaped, so that it cannot end the quote.
 */
export function quoted(bytes: Uint8Array): string {
  let end = Math.min(bytes.length, TRACE_PREVIEW);
  while (end > 0 && end < bytes.length && (bytes[end] & 0xc0) === 0x80) end--; // whole characters
  const shown = showBytes(bytes.subarray(0, end)).replaceAll('"', '\\"');
  return end < bytes.length ? `"${shown}"... (${bytes.length} bytes)` : `"${shown}"`;
}

const TRACE_PREVIEW = 64; // bytes shown of one read or write

/** Why a call failed, in a few words; else the error's name and first line (the OS says it well). */
function whyFailed(err: unknown): string {
  if (err instanceof Deno.errors.ConnectionReset) return "connection reset (RST)";
  if (err instanceof Deno.errors.BrokenPipe) return "broken pipe (the peer is gone)";
  if (err instanceof Deno.errors.Interrupted) return "interrupted (we closed the connection)";
  if (err instanceof Deno.errors.BadResource) return "the connection is closed";
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return showBytes(new TextEncoder().encode(message.split("\n")[0]), 200);
}
