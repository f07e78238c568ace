/**
 * basic_client.ts — send one message, print the one answer, close.
 *
 * Sends `Hello Server !` (or `--message`) and prints
 * `Response from the server: Message received: Hello Server !`. The steps
 * are the seed's (`client.py` of socket_playground): `Deno.connect`, then
 * `writeAll` the message, then read the answer (a `LineReader`, up to its
 * `\n`). As in the seed, any failure prints a message and the socket is
 * closed whatever happens; unlike it, the failure is one `error:` line with
 * exit code 1 (so scripts can tell), the message ends with `\n` so the server
 * knows where it stops (so it must be one line), and the answer is read up to
 * its `\n` (or, as in the seed, up to the server's close) within `--timeout`
 * (`closeWhenIdle`). The connect, too, waits at most `--timeout`: a server
 * whose backlog is full never answers, and the error line says what timed
 * out. The answer is printed with control bytes escaped (`\x1b`, `\r`), so
 * a server cannot drive your terminal.
 *
 * Run (start scripts/basic_server.ts first):
 *   deno run --allow-net='127.0.0.1,[::1],localhost' scripts/basic_client.ts
 *   deno task basic_client             (same thing)
 * Expected output:
 *   Response from the server: Message received: Hello Server !
 *
 * Without our server, nc can play it:
 *   $ echo 'Message received: hi' | nc -l 127.0.0.1 12345
 *
 * @module
 */

import { parseCli, runMain, TRACE_FLAG, usageError } from "../lib/cli.ts";
import { closeWhenIdle, secondsToMs } from "../lib/deadline.ts";
import { CliError, describeError, startHint } from "../lib/errors.ts";
import { closeQuietly, writeAll } from "../lib/io.ts";
import { DEFAULT_MAX_LINE, LineReader } from "../lib/lines.ts";
import { formatAddress, showBytes } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";
import { log } from "../lib/log.ts";

const args = parseCli({
  name: "basic_client",
  summary: "Sends one message and prints the server's answer.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 12345, help: "server's TCP port" },
    message: { kind: "string", short: "m", default: "Hello Server !", help: "the message to send" },
    timeout: {
      kind: "seconds",
      default: 10,
      help: "the connect and the wait for the answer each take at most this long (0: never)",
    },
    trace: TRACE_FLAG,
  },
});

if (/[\r\n]/.test(args.message)) {
  usageError("basic_client", "--message must be one line: the server reads up to the first \\n");
}
const target = formatAddress({ transport: "tcp", hostname: args.host, port: args.port });

await runMain(async () => {
  const timeoutMs = secondsToMs(args.timeout);
  // 1. Connect: once, as the seed does (no retry), but not for longer than --timeout
  // (a server whose backlog is full does not answer at all).
  const timeout = timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs);
  const conn = await Deno.connect({ hostname: args.host, port: args.port, signal: timeout })
    .catch((err) => {
      if (timeout?.aborted) {
        throw new CliError(
          `could not connect to ${target}: no answer within ${args.timeout} s (--timeout)`,
        );
      }
      if (err instanceof Deno.errors.ConnectionRefused) {
        throw new CliError(
          `${describeError(err, target)} ${startHint("basic_server", args.port, 12345)}`,
        );
      }
      throw new CliError(`cannot connect: ${describeError(err, target)}`);
    });
  if (args.trace) traceConn(conn); // --trace: print every read and write on it
  try {
    // A read cannot be cancelled: past --timeout a watchdog closes the connection,
    // and the read fails as ReadTimeoutError.
    await closeWhenIdle(conn, timeoutMs, async () => {
      // 2. Send the message and the `\n` that ends it; one write() may send less: writeAll.
      await writeAll(conn, new TextEncoder().encode(`${args.message}\n`));
      // 3. Read the answer: it may arrive in pieces, so read up to its `\n`. It is
      // our message and the server's prefix: allow for both.
      const answer = await new LineReader(conn, { maxLine: DEFAULT_MAX_LINE + 1024 }).readLine();
      if (answer === null) throw new Error("the server closed the connection without answering");
      // The server's bytes, but never raw control bytes.
      log(`Response from the server: ${showBytes(answer)}`);
    });
  } catch (err) {
    throw new CliError(describeError(err, target)); // the error line names the server
  } finally {
    closeQuietly(conn); // whatever happened above (the watchdog may have closed it already)
  }
});
