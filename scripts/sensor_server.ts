/**
 * sensor_server.ts — many sensors at once: every message gets `pong`, and is
 * printed as `Received: <message> (from HOST:PORT)`.
 *
 * The seed (`server.py`, port 8889) started a thread per client and called
 * `recv(1024)` in a loop, taking each chunk as one message. Here each client
 * is an async task instead of a thread: while one client's read waits,
 * Deno's event loop runs the others, so thousands of sensors cost a few KiB
 * each, not a thread stack each. Messages are lines, split however TCP
 * delivers them, so two readings sent together still get two `pong`s. Limits
 * keep one client from hurting the rest: `--max-conns`, `--idle-timeout`,
 * `--max-line`. The seed's `Received:` words are kept, with the sender added
 * (many sensors talk at once), and the message is printed with control bytes
 * escaped (`\x1b`, `\r`), so a sensor cannot drive the server's terminal.
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' scripts/sensor_server.ts
 *   deno task sensor_server            (same thing)
 *
 * Try it from a second terminal:
 *   $ deno task sensor_client --count 3 --interval 0.2
 *   ...
 *   3 samples sent, 3 received, 0% loss
 * and the server prints:
 *   Received: ping (from 127.0.0.1:PORT)
 *   ...
 *   Client (127.0.0.1:PORT) is offline
 *
 * Or with nc:
 *   $ printf 'ping\n' | nc -N 127.0.0.1 8889
 *   pong
 *
 * @module
 */

import { lineServerFlags, parseCli, runMain } from "../lib/cli.ts";
import { secondsToMs } from "../lib/deadline.ts";
import { LINE_TOO_LONG, LineTooLongError } from "../lib/errors.ts";
import { writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";
import { nextPoll, ReplyBatch } from "../lib/many_clients.ts";
import { listen, TcpServer } from "../lib/server.ts";
import { LOG_PREVIEW, showBytes } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";
import { log } from "../lib/log.ts";

const args = parseCli({
  name: "sensor_server",
  summary: "Answers every line from every client with 'pong'; many clients at once.",
  options: {
    ...lineServerFlags(8889, 60),
    "max-conns": {
      kind: "integer",
      min: 1,
      max: 100_000,
      default: 1000,
      help: "clients served at once",
    },
    quiet: { kind: "boolean", help: "do not print each message" },
  },
});

const PONG = new TextEncoder().encode("pong\n");

await runMain(async () => {
  const server = new TcpServer(await listen(args.host, args.port), {
    name: "sensor_server",
    maxConns: args["max-conns"],
    idleTimeoutMs: secondsToMs(args["idle-timeout"]),
  });
  for await (const conn of server.accept()) {
    if (args.trace) traceConn(conn); // --trace: print every read and write on it
    conn.setNoDelay(true); // the client times each round trip: send pong at once
    // Not awaited: this client's task runs while we accept the next one.
    server.handle(conn, async ({ peer, idle, signal }) => {
      log(`Client (${peer}) connected`);
      const lines = new LineReader(conn, { maxLine: args["max-line"], signal });
      const replies = new ReplyBatch(conn, idle);
      try {
        while (true) {
          const batch = await lines.readBatch(); // every whole line that has arrived
          if (batch === null) break; // the client is done (or Ctrl+C)
          idle?.restart(); // a line came in: this client is not idle
          for (const line of batch) {
            // Escaped: a peer's bytes must not move the cursor or fake a log line.
            if (!args.quiet) {
              log(`Received: ${showBytes(line, LOG_PREVIEW)} (from ${peer})`);
            }
            replies.add(PONG);
          }
          await replies.send(); // one write() answers them all
          await nextPoll(); // fairness: the other clients get their turn before we read again
        }
      } catch (err) {
        if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG); // say why
        throw err; // handle() logs it in one line and closes the connection
      }
      log(`Client (${peer}) is offline`);
    });
  }
});
