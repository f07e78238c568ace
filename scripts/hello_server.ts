/**
 * hello_server.ts — the first conversation: accept one client, greet it,
 * read its answer, close.
 *
 * It keeps the seed's (`server.py`, port 50000) words: it prints
 * `New client joined: ...`, sends `Hello client!`, and prints
 * `Client: <message>`. What the seed left to luck is fixed: each message ends
 * with `\n`, so the other side knows where it stops (one `recv(2048)` may
 * return part of a message, or two); the answer is awaited at most
 * `--timeout` seconds; the sockets are closed whatever happens. The seed
 * served one client and exited; so does this, unless `--forever`.
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' scripts/hello_server.ts
 *   deno task hello_server            (same thing)
 *
 * Try it from a second terminal:
 *   $ deno task hello_client
 *   Server: Hello client!
 * and the server prints:
 *   New client joined: 127.0.0.1:PORT
 *   Client: Hello Server!
 *
 * Or with nc, typing the answer yourself (the server prints it):
 *   $ nc 127.0.0.1 50000
 *
 * @module
 */

import { parseCli, runMain, TRACE_FLAG } from "../lib/cli.ts";
import { secondsToMs } from "../lib/deadline.ts";
import { LINE_TOO_LONG, LineTooLongError } from "../lib/errors.ts";
import { writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";
import { listen, TcpServer } from "../lib/server.ts";
import { LOG_PREVIEW, showBytes } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";
import { log } from "../lib/log.ts";

const args = parseCli({
  name: "hello_server",
  summary: "Greets a client with 'Hello client!' and prints its answer; exits after one client.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "address to listen on" },
    port: { kind: "port", short: "p", default: 50000, help: "TCP port, 0 for any free one" },
    forever: { kind: "boolean", help: "keep serving clients instead of exiting after one" },
    timeout: {
      kind: "seconds",
      default: 10,
      help: "wait this long for the client's answer (0: forever)",
    },
    trace: TRACE_FLAG,
  },
});

await runMain(async () => {
  const server = new TcpServer(await listen(args.host, args.port), {
    name: "hello_server",
    idleTimeoutMs: secondsToMs(args.timeout), // no answer within --timeout: hang up
  });
  for await (const conn of server.accept()) {
    if (args.trace) traceConn(conn); // --trace: print every read and write on it
    await server.handle(conn, async ({ peer, signal }) => {
      log(`New client joined: ${peer}`);
      await writeAll(conn, new TextEncoder().encode("Hello client!\n"));
      const answer = await new LineReader(conn, { signal }).readLine().catch(async (err) => {
        // Like the line servers, say why before hanging up.
        if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG);
        throw err;
      });
      if (answer === null) {
        log(`${peer} ${signal.aborted ? "closed at shutdown" : "left without a word"}`);
      } else log(`Client: ${showBytes(answer, LOG_PREVIEW)}`); // escaped: the peer's bytes must not drive the terminal
    });
    if (!args.forever) break;
  }
  await server.shutdown();
});
