/**
 * socket_server.ts — the simple server: one client at a time, and for every
 * line it receives it answers `OK ... <line>`.
 *
 * The seed (`socket_server.py`) called `recv(4096)` once and treated what it
 * got as one message. TCP has no messages: one read can hold half a line or
 * many lines. Here a `BatchLineReader` (lib/many_clients.ts) splits the bytes on `\n`,
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
 * The socket calls are all here: `Deno.listen`, the accept loop, each
 * client's reads (through a `BatchLineReader`), writes (`replies.send()` is one
 * `writeAll` of the replies to the lines that came together) and `close`.
 * What makes it robust is a named call each: `stopOnSignal` (Ctrl+C),
 * `closeWhenIdleFor` (the idle deadline), `OpenClients` (what Ctrl+C
 * closes), all in lib/server.ts. `await nextPoll()` lets other clients go first; there are
 * none here, and it is kept so that this file and
 * socket_server_with_select.ts differ only where the lesson is (lesson 5).
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
  whyCannotListen,
  whyClientFailed,
} from "../lib/server.ts";
import { formatAddress } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";

const args = parseCli({
  name: "socket_server",
  summary: "One client at a time; answers every line with 'OK ... <line>'.",
  options: lineServerFlags(8888, 60),
});

const OK = new TextEncoder().encode("OK ... ");
const NEWLINE = new TextEncoder().encode("\n");
const clients = new OpenClients(); // the ones Ctrl+C lets finish, then closes

await runMain(async () => {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: args.host, port: args.port });
  } catch (err) {
    throw await whyCannotListen(err, args.host, args.port); // names the address
  }
  stopOnSignal("socket_server", listener, clients, log); // Ctrl+C: stop, let replies finish, exit 0
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
    conn.setNoDelay(true); // replies are small: don't let Nagle hold them back
    await serve(conn); // one client at a time: the next waits in the backlog
  }
});

/** Answers every line of one client with `OK ... <line>`, until it leaves. */
async function serve(conn: Deno.TcpConn): Promise<void> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn); // aborts at Ctrl+C
  const idle = closeWhenIdleFor(conn, secondsToMs(args["idle-timeout"]));
  log(`Client (${peer}) connected`);
  try {
    const lines = new BatchLineReader(conn, { maxLine: args["max-line"], signal: stop });
    const replies = new ReplyBatch(conn, idle);
    // Every whole line that has arrived comes in one batch; null: the client is done.
    for (let batch = await lines.readBatch(); batch !== null; batch = await lines.readBatch()) {
      idle?.restart(); // a line came in: this client is not idle
      for (const line of batch) replies.add(OK, line, NEWLINE);
      await replies.send(); // one write() answers them all
      await nextPoll(); // fairness: the other clients get their turn before we read again
    }
    log(`Client (${peer}) is offline`);
  } catch (err) {
    if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG).catch(() => {});
    if (!stop.aborted) log(`${peer}: ${whyClientFailed(err, idle)}`); // one line, then the next client
  } finally {
    idle?.stop();
    clients.close(conn);
  }
}
