/**
 * basic_server.ts — one message, one answer, close: for each client, receive
 * a message, answer `Message received: <message>`, close, wait for the next.
 *
 * The seed (`server.py` of socket_playground) took one `recv(1024)` as the
 * whole message. Here a message is a line (up to `\n`, or up to the client's
 * end of stream if it sends no newline), read however TCP splits it, at most
 * `--max-line` bytes, and a client that says nothing for `--timeout` seconds
 * is dropped, so it cannot hold the server forever. Clients are served one
 * after another, as in the seed. The answer carries the client's bytes
 * exactly as received.
 *
 * The socket calls are all here: `Deno.listen`, the accept loop, the
 * message's read (a `LineReader`: conn.read until the `\n`), the answer's
 * write and `close`. What makes it robust is a named call each, from
 * lib/server.ts: `stopOnSignal` (Ctrl+C), `closeWhenIdleFor` (the `--timeout` deadline), `OpenClients`
 * (what Ctrl+C closes) and `whyClientFailed` (one log line, not a crash).
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' scripts/basic_server.ts
 *   deno task basic_server            (same thing)
 *
 * Try it from a second terminal:
 *   $ deno task basic_client
 *   Response from the server: Message received: Hello Server !
 *
 * Or with nc:
 *   $ echo 'Hello Server !' | nc -N 127.0.0.1 12345
 *   Message received: Hello Server !
 *
 * @module
 */

import { parseCli, runMain, secondsToMs } from "../lib/cli.ts";
import { concatBytes, LineReader, LineTooLongError, writeAll } from "../lib/io.ts";
import {
  acceptAgain,
  closeWhenIdleFor,
  LINE_TOO_LONG,
  MAX_LINE_LIMIT,
  OpenClients,
  stopOnSignal,
  whyCannotListen,
  whyClientFailed,
} from "../lib/server.ts";
import { log, logError } from "../lib/log.ts";
import { formatAddress, LOG_PREVIEW, showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";

const args = parseCli({
  name: "basic_server",
  summary: "Answers one message per client with 'Message received: <message>', then closes.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "address to listen on" },
    port: { kind: "port", short: "p", default: 12345, help: "TCP port, 0 for any free one" },
    timeout: {
      kind: "seconds",
      default: 10,
      help: "drop a client that neither completes its message nor takes a byte of the " +
        "answer for this long (0: never)",
    },
    "max-line": {
      kind: "integer",
      min: 1,
      max: MAX_LINE_LIMIT,
      default: 64 * 1024,
      help: "longest message in bytes",
    },
    trace: TRACE_FLAG,
  },
});

const encoder = new TextEncoder();
const RECEIVED = encoder.encode("Message received: ");
const NEWLINE = encoder.encode("\n");
const clients = new OpenClients(); // the one Ctrl+C lets finish, then closes

await runMain(async () => {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: args.host, port: args.port });
  } catch (err) {
    throw await whyCannotListen(err, args.host, args.port); // names the address
  }
  stopOnSignal("basic_server", listener, clients, log); // Ctrl+C: stop, let the answer finish, exit 0
  console.log(`listening on ${formatAddress(listener.addr)}`);
  log("Server is running, waiting for connections...");

  while (true) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (await acceptAgain(err, log)) continue; // a client reset in the backlog: take the next
      break; // Ctrl+C closed the listener
    }
    if (args.trace) traceConn(conn, { print: logError }); // --trace: print every read and write on it
    await answer(conn); // one client at a time: the next waits in the backlog
  }
});

/** Reads one message from a client, answers `Message received: <message>`, closes. */
async function answer(conn: Deno.TcpConn): Promise<void> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn); // aborts at Ctrl+C
  // Not restarted per read: one --timeout for the whole message, then one
  // more for taking the answer. A client that trickles its message byte by
  // byte cannot hold this one-client-at-a-time server for longer.
  const idle = closeWhenIdleFor(conn, secondsToMs(args.timeout));
  try {
    // Up to its \n, or its end of stream.
    const message = await new LineReader(conn, { maxLine: args["max-line"], signal: stop })
      .readLine();
    if (message === null) {
      log(`${peer} ${stop.aborted ? "closed at shutdown" : "sent nothing"}`);
      return;
    }
    idle?.restart(); // the message is in: now --timeout for taking the answer
    log(`${peer}: ${showBytes(message, LOG_PREVIEW)}`); // escaped: the peer's bytes must not drive the terminal
    // One write for the whole answer; each byte the client takes restarts its clock.
    await writeAll(conn, concatBytes([RECEIVED, message, NEWLINE]), idle);
  } catch (err) {
    // Like the line servers, say why before hanging up.
    if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG).catch(() => {});
    if (!stop.aborted) log(`${peer}: ${whyClientFailed(err, idle)}`); // one line, then the next client
  } finally {
    idle?.stop();
    clients.close(conn);
  }
}
