/**
 * hello_client.ts — the other half of the first conversation: connect, print
 * the server's greeting, answer `Hello Server!`, close.
 *
 * The seed (`client.py`) took one `recv(2048)` for the whole greeting, but
 * TCP may deliver it in pieces. Here `connectWithRetry` connects (3
 * attempts, each within `--timeout`: a server whose backlog is full never
 * answers; each failed attempt is reported on stderr), a `LineReader` reads
 * the greeting up to its `\n` (as in the seed, a greeting may also end with
 * the server closing instead), within `--timeout` (`closeWhenIdle` closes a
 * silent connection), and `writeAll` sends the answer. A refused or silent
 * server gives a one-line `error:` instead of a traceback. The greeting is
 * printed with control bytes escaped (`\x1b`, `\r`), so a server cannot
 * drive your terminal. The socket is closed whatever happens.
 *
 * Run (start scripts/hello_server.ts first):
 *   deno run --allow-net='127.0.0.1,[::1],localhost' scripts/hello_client.ts
 *   deno task hello_client             (same thing)
 * Expected output:
 *   Server: Hello client!
 *
 * Without our server, nc can play it (it sends the greeting, shows the answer):
 *   $ echo 'Hello client!' | nc -l 127.0.0.1 50000
 *   Hello Server!
 *
 * @module
 */

import { parseCli, runMain, TRACE_FLAG, usageError } from "../lib/cli.ts";
import { closeWhenIdle, secondsToMs } from "../lib/deadline.ts";
import { CliError, describeError, startHint } from "../lib/errors.ts";
import { reportAttempt } from "../lib/connect.ts";
import { closeQuietly, writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";
import { connectWithRetry } from "../lib/retry.ts";
import { formatAddress, showBytes } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";
import { log } from "../lib/log.ts";

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
  // within --timeout (a server whose backlog is full does not answer at all).
  const conn = await connectWithRetry({
    hostname: args.host,
    port: args.port,
    attempts: 3,
    connectTimeoutMs: timeoutMs ?? 0, // 0: never
    hint: startHint("hello_server", args.port, 50000),
    onRetry: reportAttempt(3), // "attempt 1/3 failed: ...; retrying in N ms" (stderr)
  });
  if (args.trace) traceConn(conn); // --trace: print every read and write on it
  try {
    // --timeout: a read cannot be cancelled, so a watchdog closes a silent
    // connection, and the read fails as ReadTimeoutError.
    await closeWhenIdle(conn, timeoutMs, async () => {
      // 2. Read the greeting: it may arrive in pieces, so read up to its `\n`.
      const greeting = await new LineReader(conn).readLine();
      if (greeting === null) throw new Error("the server closed the connection without a greeting");
      log(`Server: ${showBytes(greeting)}`); // the server's bytes, never raw control bytes
      // 3. Answer, with the `\n` the server reads up to; writeAll, since one write() may send less.
      await writeAll(conn, new TextEncoder().encode(`${args.message}\n`));
    });
  } catch (err) {
    throw new CliError(describeError(err, target)); // the error line names the server
  } finally {
    closeQuietly(conn); // the watchdog may have closed it already
  }
});
