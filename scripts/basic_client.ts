/**
 * basic_client.ts — send one message, print the one answer, close.
 *
 * Sends `Hello Server !` (or `--message`) and prints
 * `Response from the server: Message received: Hello Server !`. As in the
 * seed (`client.py` of socket_playground), any failure prints a message and
 * the socket is closed whatever happens; unlike it, the failure is one
 * `error:` line with exit code 1 (so scripts can tell), the message ends with
 * `\n` so the server knows where it stops, and the answer is read up to its
 * `\n` with a `--timeout`.
 *
 * Run (start scripts/basic_server.ts first):
 *   deno run --allow-net=127.0.0.1,[::1],localhost scripts/basic_client.ts
 *   deno task basic_client             (same thing)
 * Expected output:
 *   Response from the server: Message received: Hello Server !
 *
 * Without our server, nc can play it:
 *   $ echo 'Message received: hi' | nc -l 127.0.0.1 12345
 *
 * @module
 */

import { CliError, describeError, parseCli, runMain } from "../lib/cli.ts";
import { writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";

const args = parseCli({
  name: "basic_client",
  summary: "Sends one message and prints the server's answer.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 12345, help: "server's TCP port" },
    message: { kind: "string", short: "m", default: "Hello Server !", help: "the message to send" },
    timeout: { kind: "seconds", default: 10, help: "wait this long to connect and for the answer" },
  },
});

await runMain(async () => {
  const timeoutMs = args.timeout * 1000;
  const conn = await Deno.connect({
    hostname: args.host,
    port: args.port,
    signal: AbortSignal.timeout(timeoutMs),
  }).catch((err) => {
    throw new CliError(`cannot connect: ${describeError(err, `${args.host}:${args.port}`)}`);
  });
  try {
    await writeAll(conn, new TextEncoder().encode(`${args.message}\n`));
    const answer = await new LineReader(conn, { timeoutMs }).readLine();
    if (answer === null) throw new Error("the server closed the connection without answering");
    console.log(`Response from the server: ${new TextDecoder().decode(answer)}`);
  } finally {
    conn.close(); // whatever happened above
  }
});
