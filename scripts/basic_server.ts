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

import { MAX_LINE_LIMIT, parseCli, runMain, TRACE_FLAG } from "../lib/cli.ts";
import { secondsToMs } from "../lib/deadline.ts";
import { LINE_TOO_LONG, LineTooLongError } from "../lib/errors.ts";
import { concatBytes, writeAll } from "../lib/io.ts";
import { DEFAULT_MAX_LINE, LineReader } from "../lib/lines.ts";
import { listen, TcpServer } from "../lib/server.ts";
import { LOG_PREVIEW, showBytes } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";
import { log } from "../lib/log.ts";

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
      default: DEFAULT_MAX_LINE,
      help: "longest message in bytes",
    },
    trace: TRACE_FLAG,
  },
});

const encoder = new TextEncoder();
const NEWLINE = encoder.encode("\n");

await runMain(async () => {
  // One clock for the whole conversation: a client that trickles its message
  // byte by byte, or never reads the answer, cannot hold the server (it
  // serves one client at a time) for longer than --timeout.
  const server = new TcpServer(await listen(args.host, args.port), {
    name: "basic_server",
    idleTimeoutMs: secondsToMs(args.timeout),
  });
  log("Server is running, waiting for connections...");
  for await (const conn of server.accept()) {
    if (args.trace) traceConn(conn); // --trace: print every read and write on it
    await server.handle(conn, async ({ peer, idle, signal }) => {
      const lines = new LineReader(conn, { maxLine: args["max-line"], signal });
      const message = await lines.readLine().catch(async (err) => {
        // Like the line servers, say why before hanging up.
        if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG);
        throw err;
      });
      if (message === null) {
        return log(`${peer} ${signal.aborted ? "closed at shutdown" : "sent nothing"}`);
      }
      idle?.restart();
      // Peer bytes are shown escaped: they must not drive the terminal.
      log(`${peer}: ${showBytes(message, LOG_PREVIEW)}`);
      const answer = concatBytes([encoder.encode("Message received: "), message, NEWLINE]);
      await writeAll(conn, answer, idle); // each byte the client takes restarts its clock
    });
  }
});
