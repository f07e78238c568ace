/**
 * basic_client.ts — send one message, print the one answer, close.
 *
 * Sends `Hello Server !` (or `--message`) and prints
 * `Response from the server: Message received: Hello Server !`. The steps
 * are the seed's (`client.py` of socket_playground), in plain view below:
 * `Deno.connect`, then `writeAll` the message, then read the answer (`LineReader`),
 * then `conn.close()`. As in the seed, any failure prints a message and the
 * socket is closed whatever happens; unlike it, the failure is one `error:`
 * line with exit code 1 (so scripts can tell), the message ends with `\n`
 * so the server knows where it stops (so it must be one line), and the
 * answer is read with a `LineReader` (conn.read in a loop) up to its `\n`
 * (or, as in the seed, up to the server's close): TCP may deliver it in
 * pieces. Each step waits at most
 * `--timeout`: the connect (a server whose backlog is full never answers),
 * then the answer (a read cannot be cancelled, so a timer closes a silent
 * connection); the error line says what timed out. The answer is printed
 * with control bytes escaped (`\x1b`, `\r`), so a server cannot drive your
 * terminal.
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

import {
  CliError,
  describeError,
  parseCli,
  runMain,
  secondsToMs,
  startHint,
  usageError,
} from "../lib/cli.ts";
import { LineReader, ReadTimeoutError, writeAll } from "../lib/io.ts";
import { formatAddress, showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";
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
const timeoutMs = secondsToMs(args.timeout);
/** The answer is our message (one line, up to 64 KiB) and the server's prefix: allow for both. */
const MAX_ANSWER = 64 * 1024 + 1024;

await runMain(async () => {
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
  // --timeout: a read cannot be cancelled, so a timer closes a silent connection.
  let timedOut = false;
  const watchdog = timeoutMs === undefined ? undefined : setTimeout(() => {
    timedOut = true;
    conn.close();
  }, timeoutMs);
  try {
    // 2. Send the message and the `\n` that ends it; one write() may send less: writeAll.
    await writeAll(conn, new TextEncoder().encode(`${args.message}\n`));
    // 3. Read the answer: it may arrive in pieces, so a LineReader calls conn.read
    // until its `\n` (or, as in the seed, until the server closes).
    const answer = await new LineReader(conn, { maxLine: MAX_ANSWER }).readLine();
    if (answer === null) throw new Error("the server closed the connection without answering");
    console.log(`Response from the server: ${showBytes(answer)}`); // never raw control bytes
  } catch (err) {
    // The error line names the server, and says "no reply within N s" after --timeout.
    throw new CliError(describeError(timedOut ? new ReadTimeoutError(timeoutMs!) : err, target));
  } finally {
    clearTimeout(watchdog);
    if (!timedOut) conn.close(); // whatever happened above (the watchdog closed it already)
  }
});
