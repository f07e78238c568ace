/**
 * socket_client.ts — connects to a line server (retrying while it starts),
 * sends messages such as sensor readings or control commands, one per line,
 * and prints each reply.
 *
 * Messages come from `--message` (repeatable), else from standard input when
 * it is a pipe or a file (one message per line), else (a terminal, or empty
 * input) one sample reading. A message is one line, so a `--message` holding
 * a newline is refused: the server would answer it twice.
 *
 * The socket calls are in plain view below. `Deno.connect` connects; while
 * the server is not up yet, `connectWithRetry` calls it again, `--attempts`
 * times with growing delays, each attempt within `--timeout` (a server whose
 * backlog is full does not answer at all). `writeAll` sends each message and
 * its `\n` in one write (with Nagle off, so that the small line leaves at
 * once). A `LineReader` over the connection reads each reply up to its
 * `\n`: the seed (`socket_client.py`) assumed one `recv(4096)` returns the
 * whole reply, but TCP may deliver it in pieces. A reply cut off by the
 * server closing before its `\n` is an error, not a reply. Each reply is due
 * within `--timeout` of its send: a read cannot be cancelled, so a timer
 * closes the connection when it is late, and a server that never answers
 * cannot hang the client. `conn.close()` ends it whatever happened. Replies
 * are printed as the server's bytes, with control bytes
 * escaped (`\x1b`, `\r`) so a server cannot drive your terminal. Progress
 * goes to stderr, replies to stdout, so output can be piped; `--trace` adds
 * every read and write on the connection to stderr as it happens (a reply
 * that came in two pieces is two reads).
 *
 * Run (start scripts/socket_server.ts first):
 *   deno run --allow-net='127.0.0.1,[::1],localhost' scripts/socket_client.ts --message hello
 *   deno task socket_client --message hello     (same thing)
 * Expected output:
 *   OK ... hello
 *
 * Pipe many messages, one per line:
 *   $ printf 'temp 21.5\nhumidity 40\n' | deno task socket_client
 *   OK ... temp 21.5
 *   OK ... humidity 40
 *
 * Without our server, a listening `nc` plays the server (type replies in it):
 *   $ nc -l 127.0.0.1 8888
 *
 * @module
 */

import { CliError, describeError, parseCli, runMain, secondsToMs, startHint } from "../lib/cli.ts";
import { ATTEMPTS_FLAG, connectWithRetry, reportAttempt } from "../lib/retry.ts";
import {
  concatBytes,
  LineReader,
  LineTooLongError,
  ReadTimeoutError,
  TruncatedLineError,
  writeAll,
} from "../lib/io.ts";
import { formatAddress, paint, showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";
import { checkMessages, MAX_REPLY, messages } from "./socket_client/messages.ts";

const args = parseCli({
  name: "socket_client",
  summary: "Sends messages to a line server and prints each reply.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 8888, help: "server's TCP port" },
    message: {
      kind: "strings",
      short: "m",
      help: "a message to send, one line (repeatable). Without -m: each line of stdin when " +
        "stdin is a pipe or file; on a terminal, or with empty input, one sample reading",
    },
    attempts: ATTEMPTS_FLAG,
    timeout: {
      kind: "seconds",
      default: 10,
      help: "each connect attempt and each reply wait at most this long (0: never)",
    },
    trace: TRACE_FLAG,
  },
});

checkMessages("socket_client", args.message); // one line each: else a usage error
const NEWLINE = new TextEncoder().encode("\n");
const target = formatAddress({ transport: "tcp", hostname: args.host, port: args.port });
const timeoutMs = secondsToMs(args.timeout);

await runMain(async () => {
  // 1. Connect. A server that is still starting refuses us: try again, with growing waits.
  const conn = await connectWithRetry({
    connect: ({ signal }) => Deno.connect({ hostname: args.host, port: args.port, signal }),
    hostname: args.host, // (for the error lines)
    port: args.port,
    attempts: args.attempts,
    connectTimeoutMs: timeoutMs ?? 0, // each attempt within --timeout (`signal`; 0: never)
    hint: startHint("socket_server", args.port, 8888),
    onRetry: reportAttempt(args.attempts), // "attempt 1/5 failed: ...; retrying in N ms" (stderr)
  });
  if (args.trace) traceConn(conn); // --trace: print every read and write on it
  // Each message is one small write: send it now, don't let Nagle hold it for more bytes.
  conn.setNoDelay(true);
  console.error(paint("dim", `connected to ${target}`, "stderr"));
  // requireNewline: a reply is complete only once its `\n` has arrived.
  const replies = new LineReader(conn, { maxLine: MAX_REPLY, requireNewline: true });
  // --timeout: a read cannot be cancelled, so a timer closes the connection
  // when a reply is late (it runs only while a reply is due, not while stdin is slow).
  let timedOut = false;
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  try {
    for await (const message of messages(args.message)) {
      // 2. Send: the line and its newline in one write; writeAll, since one
      // write() may take only part of it.
      await writeAll(conn, concatBytes([message, NEWLINE]));
      if (timeoutMs !== undefined) {
        watchdog = setTimeout(() => {
          timedOut = true;
          conn.close();
        }, timeoutMs);
      }
      // 3. Read the reply: it may arrive in pieces, so read up to its `\n`.
      const reply = await replies.readLine();
      clearTimeout(watchdog);
      if (reply === null) throw new CliError(`${target} closed the connection before replying`);
      console.log(showBytes(reply)); // the server's bytes, but never raw control bytes
    }
  } catch (err) {
    throw explain(timedOut ? new ReadTimeoutError(timeoutMs!) : err);
  } finally {
    clearTimeout(watchdog);
    if (!timedOut) conn.close(); // (the watchdog closed it already)
  }
});

/** A failed reply, in words that say what happened. */
function explain(err: unknown): unknown {
  if (err instanceof TruncatedLineError) {
    return new CliError(
      `the reply was cut off: ${target} closed the connection after ` +
        `'${showBytes(err.partial)}' (no newline)`,
    );
  }
  if (err instanceof LineTooLongError) {
    return new CliError(`a reply from ${target} is longer than ${MAX_REPLY} bytes`);
  }
  if (err instanceof ReadTimeoutError) {
    // Connected but unanswered: the classic sign of a one-client-at-a-time server.
    return new CliError(
      `${describeError(err, target)}: is the server busy with another client? ` +
        `(socket_server serves one at a time; the others wait)`,
    );
  }
  return err;
}
