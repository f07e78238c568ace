/**
 * hello_client.ts — the other half of the first conversation: connect, print
 * the server's greeting, answer `Hello Server!`, close.
 *
 * The three socket calls are in plain view below. `Deno.connect` connects; a
 * server that is still starting refuses, so `connectWithRetry` calls it up
 * to 3 times, each attempt within `--timeout` (a server whose backlog is
 * full never answers; each failed attempt is reported on stderr). Then
 * a `LineReader` reads the greeting: the seed (`client.py`) took one
 * `recv(2048)` for it, but TCP may deliver it in pieces, so it calls
 * conn.read until the `\n` arrives (or, as from the seed's server, until the
 * server closes). `writeAll` sends the answer, since one `write` may send
 * less, and `conn.close()` ends it whatever happened. A read cannot be
 * cancelled, so `--timeout` is a timer that closes a silent connection. A
 * refused or silent server gives a one-line `error:` instead of a traceback.
 * The greeting is printed with control bytes escaped (`\x1b`, `\r`), so a
 * server cannot drive your terminal.
 *
 * Run (start scripts/hello_server.ts first):
 *   deno run --allow-net='127.0.0.1,[::1],localhost' scripts/hello_client.ts
 *   deno task hello_client             (same thing)
 * Expected output:
 *   Server: Hello client!
 *
 * Without our server, nc can play it (it sends the greeting, shows the
 * answer):
 *   $ echo 'Hello client!' | nc -l 127.0.0.1 50000
 *   Hello Server!
 *
 * @module
 */

import {
  CliError,
  describeError,
  parseCli,
  runMain,
  secondsToMs,
  startHint,
  usageError,
} from "../lib/cli.ts";
import { connectWithRetry, reportAttempt } from "../lib/retry.ts";
import { LineReader, ReadTimeoutError, writeAll } from "../lib/io.ts";
import { formatAddress, showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";
const args = parseCli({
  name: "hello_client",
  summary: "Prints the server's greeting and answers 'Hello Server!'.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 50000, help: "server's TCP port" },
    message: { kind: "string", short: "m", default: "Hello Server!", help: "the answer to send" },
    timeout: {
      kind: "seconds",
      default: 10,
      help: "each connect attempt and the wait for the greeting take at most this long (0: never)",
    },
    trace: TRACE_FLAG,
  },
});

if (/[\r\n]/.test(args.message)) {
  usageError("hello_client", "--message must be one line: the server reads up to the first \\n");
}

const target = formatAddress({ transport: "tcp", hostname: args.host, port: args.port });
const timeoutMs = secondsToMs(args.timeout);

await runMain(async () => {
  // 1. Connect; a server that is still starting refuses, so try 3 times, each
  // within --timeout (`signal`: a server whose backlog is full does not answer at all).
  const conn = await connectWithRetry({
    connect: ({ signal }) => Deno.connect({ hostname: args.host, port: args.port, signal }),
    hostname: args.host, // (for the error lines)
    port: args.port,
    attempts: 3,
    connectTimeoutMs: timeoutMs ?? 0, // 0: never
    hint: startHint("hello_server", args.port, 50000),
    onRetry: reportAttempt(3), // "attempt 1/3 failed: ...; retrying in N ms" (stderr)
  });
  if (args.trace) traceConn(conn); // --trace: print every read and write on it
  // --timeout: a read cannot be cancelled, so a timer closes a silent connection.
  let timedOut = false;
  const watchdog = timeoutMs === undefined ? undefined : setTimeout(() => {
    timedOut = true;
    conn.close();
  }, timeoutMs);
  try {
    // 2. Read the greeting: it may arrive in pieces, so read up to its `\n`
    // (or, as from the seed's server, up to the server closing).
    const greeting = await new LineReader(conn).readLine();
    if (greeting === null) throw new Error("the server closed the connection without a greeting");
    console.log(`Server: ${showBytes(greeting)}`); // the server's bytes, never raw control bytes
    // 3. Answer, with the `\n` the server reads up to; writeAll, since one write() may send less.
    await writeAll(conn, new TextEncoder().encode(`${args.message}\n`));
  } catch (err) {
    // The error line names the server, and says "no reply within N s" after --timeout.
    throw new CliError(describeError(timedOut ? new ReadTimeoutError(timeoutMs!) : err, target));
  } finally {
    clearTimeout(watchdog);
    if (!timedOut) conn.close(); // (the watchdog closed it already)
  }
});
