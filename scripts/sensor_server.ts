/**
 * sensor_server.ts — many sensors at once: every message gets `pong`, and is
 * printed as `Received: <message> (from HOST:PORT)`.
 *
 * The seed (`server.py`, port 8889) started a thread per client and called
 * `recv(1024)` in a loop, taking each chunk as one message. Here each client
 * is an async task instead of a thread: while one client's `read()` waits,
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

import { lineServerFlags, LOG_PREVIEW, parseCli, runMain, showBytes } from "../lib/cli.ts";
import { serveLines } from "../lib/lines.ts";
import { lineLimits, listen, TcpServer } from "../lib/server.ts";

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
  const server = new TcpServer(listen(args.host, args.port), {
    name: "sensor_server",
    maxConns: args["max-conns"],
  });
  for await (const conn of server.accept()) {
    conn.setNoDelay(true); // the client times each round trip: send pong at once
    // Not awaited: this client's task runs while we accept the next one.
    server.handle(conn, async (conn, peer) => {
      console.log(`Client (${peer}) connected`);
      await serveLines(conn, (line) => {
        // Escaped: a peer's bytes must not move the cursor or fake a log line.
        if (!args.quiet) console.log(`Received: ${showBytes(line, LOG_PREVIEW)} (from ${peer})`);
        return [PONG];
      }, lineLimits(args, server.signal));
      console.log(`Client (${peer}) is offline`);
    });
  }
});
