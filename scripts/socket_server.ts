/**
 * socket_server.ts — the simple server: one client at a time, and for every
 * line it receives it answers `OK ... <line>`.
 *
 * The seed (`socket_server.py`) called `recv(4096)` once and treated what it
 * got as one message. TCP has no messages: one read can hold half a line or
 * many lines. Here a `LineReader` (lib/lines.ts) splits the bytes on `\n`,
 * the reply carries the client's bytes exactly (never decoded), and a
 * client that resets or sends an endless line (`--max-line`, answered
 * `ERR line too long`) is dropped without stopping the server. So is an idle
 * one (`--idle-timeout`): idle means it neither completed a line nor took a
 * byte of its replies for that long, so a client that trickles a line a byte
 * at a time, or never reads its replies, cannot hold the server either. Like
 * the seed's single loop, the next client waits in the kernel's backlog until
 * the current one leaves. So a client that is never idle (one that completes
 * a line every 2 s, under `--idle-timeout 3`) holds the server for as long as
 * it likes, and the next one waits all that time: that is the seed's design,
 * kept here to show it. The fix is to serve clients side by side, as
 * scripts/socket_server_with_select.ts does (lesson 5 of LESSONS.md). The
 * server logs `Client (HOST:PORT) connected` and `... is offline`, the words
 * of the other line servers.
 *
 * With `--trace`, every read and write on a client's connection is printed to
 * stderr as it happens (`traceConn`, lib/trace.ts): `hel`, then a second later
 * `lo\nwor`, shows as two reads and one reply, `OK ... hello`.
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' scripts/socket_server.ts
 *   deno task socket_server            (same thing)
 *
 * Try it from a second terminal:
 *   $ printf 'hello\nworld\n' | nc -N 127.0.0.1 8888
 *   OK ... hello
 *   OK ... world
 *
 * Or with the companion client:
 *   $ deno task socket_client --message hello
 *   OK ... hello
 *
 * @module
 */

import { lineServerFlags, parseCli, runMain } from "../lib/cli.ts";
import { secondsToMs } from "../lib/deadline.ts";
import { LINE_TOO_LONG, LineTooLongError } from "../lib/errors.ts";
import { writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";
import { ReplyBatch } from "../lib/replies.ts";
import { listen, TcpServer } from "../lib/server.ts";
import { traceConn } from "../lib/trace.ts";
import { log } from "../lib/log.ts";

const args = parseCli({
  name: "socket_server",
  summary: "One client at a time; answers every line with 'OK ... <line>'.",
  options: lineServerFlags(8888, 60),
});

const OK = new TextEncoder().encode("OK ... ");
const NEWLINE = new TextEncoder().encode("\n");

await runMain(async () => {
  // listen() is Deno.listen with an error that names the address.
  const server = new TcpServer(await listen(args.host, args.port), {
    name: "socket_server",
    idleTimeoutMs: secondsToMs(args["idle-timeout"]),
  });
  // One client at a time: accept() is not called again until this client is done.
  for await (const conn of server.accept()) {
    if (args.trace) traceConn(conn); // --trace: print every read and write on it
    conn.setNoDelay(true); // replies are small: don't let Nagle hold them back
    await server.handle(conn, async ({ peer, idle, signal }) => {
      log(`Client (${peer}) connected`);
      const lines = new LineReader(conn, { maxLine: args["max-line"], signal });
      const replies = new ReplyBatch(conn, idle);
      try {
        while (true) {
          const batch = await lines.readBatch(); // every whole line that has arrived
          if (batch === null) break; // the client is done (or Ctrl+C)
          idle?.restart(); // a line came in: this client is not idle
          for (const line of batch) replies.add(OK, line, NEWLINE);
          await replies.send(); // one write() answers them all
        }
      } catch (err) {
        if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG); // say why
        throw err; // handle() logs it in one line and closes the connection
      }
      log(`Client (${peer}) is offline`);
    });
  }
});
