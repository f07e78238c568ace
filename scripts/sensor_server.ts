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
 * It has the shape of socket_server_with_select.ts: `Deno.listen`, the
 * accept loop and each client's reads, writes and close are here; Ctrl+C,
 * the cap, the idle deadline and a failed `accept()` are a named call each
 * (lib/server.ts).
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

import { parseCli, runMain, secondsToMs } from "../lib/cli.ts";
import { LineTooLongError, writeAll } from "../lib/io.ts";
import { log, logError } from "../lib/log.ts";
import { BatchLineReader, lineServerFlags, ReplyBatch } from "../lib/many_clients.ts";
import { nextPoll } from "../lib/fairness.ts";
import {
  acceptAgain,
  closeWhenIdleFor,
  LINE_TOO_LONG,
  OpenClients,
  stopOnSignal,
  turnAway,
  whyCannotListen,
  whyClientFailed,
} from "../lib/server.ts";
import { formatAddress, LOG_PREVIEW, showBytes } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";

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
    quiet: {
      kind: "boolean",
      help: "print nothing per client: no message, no connect or offline line",
    },
  },
});

const PONG = new TextEncoder().encode("pong\n");
const clients = new OpenClients(); // the ones Ctrl+C lets finish, then closes

await runMain(async () => {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: args.host, port: args.port });
  } catch (err) {
    throw await whyCannotListen(err, args.host, args.port); // names the address
  }
  stopOnSignal("sensor_server", listener, clients, log); // Ctrl+C: stop, let replies finish, exit 0
  console.log(`listening on ${formatAddress(listener.addr)}`);

  while (true) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (await acceptAgain(err, log)) continue; // a client reset in the backlog: take the next
      break; // Ctrl+C closed the listener
    }
    if (args.trace) traceConn(conn, { print: logError }); // --trace: print every read and write on it
    conn.setNoDelay(true); // the client times each round trip: send pong at once
    if (clients.size >= args["max-conns"]) {
      turnAway(conn, log); // ERR server busy, and close it
      continue;
    }
    serve(conn); // not awaited: this sensor is served while we accept the next
  }
});

/** Answers every line of one sensor with `pong`, and prints it, until it leaves. */
async function serve(conn: Deno.TcpConn): Promise<void> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn); // aborts at Ctrl+C
  const idle = closeWhenIdleFor(conn, secondsToMs(args["idle-timeout"]));
  if (!args.quiet) log(`Client (${peer}) connected`);
  try {
    const lines = new BatchLineReader(conn, { maxLine: args["max-line"], signal: stop });
    const replies = new ReplyBatch(conn, idle);
    // Every whole line that has arrived comes in one batch; null: the client is done.
    for (let batch = await lines.readBatch(); batch !== null; batch = await lines.readBatch()) {
      idle?.restart(); // a line came in: this client is not idle
      for (const line of batch) {
        // Escaped: a peer's bytes must not move the cursor or fake a log line.
        if (!args.quiet) log(`Received: ${showBytes(line, LOG_PREVIEW)} (from ${peer})`);
        replies.add(PONG);
      }
      await replies.send(); // one write() answers them all
      await nextPoll(); // fairness: the other clients get their turn before we read again
    }
    if (!args.quiet) log(`Client (${peer}) is offline`);
  } catch (err) {
    if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG).catch(() => {});
    if (!stop.aborted) log(`${peer}: ${whyClientFailed(err, idle)}`); // one line, then the next client
  } finally {
    idle?.stop();
    clients.close(conn);
  }
}
