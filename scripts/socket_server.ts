/**
 * socket_server.ts — the simple server: one client at a time, and for every
 * line it receives it answers `OK ... <line>`.
 *
 * The seed (`socket_server.py`) called `recv(4096)` once and treated what it
 * got as one message. TCP has no messages: one read can hold half a line or
 * many lines. Here the bytes are split on `\n` by `serveLines` (lib/lines.ts),
 * the reply carries the client's bytes exactly (never decoded), and a
 * client that resets or sends an endless line (`--max-line`, answered
 * `ERR line too long`) is dropped without stopping the server. So is an idle
 * one (`--idle-timeout`): idle means it neither completed a line nor took a
 * byte of its replies for that long, so a client that trickles a line a byte
 * at a time, or never reads its replies, cannot hold the server either. Like
 * the seed's single loop, the next client waits in the kernel's backlog until
 * the current one leaves. The server logs `Client (HOST:PORT) connected` and
 * `... is offline`, the words of the other line servers.
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
import { serveLines } from "../lib/lines.ts";
import { lineLimits, listen, TcpServer } from "../lib/server.ts";

const args = parseCli({
  name: "socket_server",
  summary: "One client at a time; answers every line with 'OK ... <line>'.",
  options: lineServerFlags(8888, 60),
});

const OK = new TextEncoder().encode("OK ... ");
const NEWLINE = new TextEncoder().encode("\n");

await runMain(async () => {
  const server = new TcpServer(listen(args.host, args.port), { name: "socket_server" });
  // One client at a time: we do not call accept() again until this client is done.
  for await (const conn of server.accept()) {
    conn.setNoDelay(true); // replies are small; don't let Nagle hold them back
    await server.handle(conn, async (conn, peer) => {
      console.log(`Client (${peer}) connected`);
      // Limits from --max-line and --idle-timeout; on Ctrl+C, stop waiting for the next line.
      await serveLines(conn, (line) => [OK, line, NEWLINE], lineLimits(args, server.signal));
      console.log(`Client (${peer}) is offline`);
    });
  }
});
