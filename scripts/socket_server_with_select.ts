/**
 * socket_server_with_select.ts — many clients at once on one thread, each
 * line answered `OK ... <line>`.
 *
 * The seed (`socket_server_with_select.py`) kept a list of sockets and called
 * `select()` to learn which were readable, then did one `recv()` on each. In
 * Deno the event loop is that `select()` (epoll on Linux, kqueue on macOS):
 * each read awaited below (the `BatchLineReader` calls conn.read() underneath)
 * registers interest in one socket, and the loop resumes whichever
 * connection has bytes. So each client is just an async function, written as
 * if it were alone, and `accept()` keeps running beside them. This file is
 * socket_server.ts with one `await` taken out (`serve(conn)`, not
 * `await serve(conn)`) and a cap added (besides its name, `--quiet`, and a
 * longer default `--idle-timeout`): `diff` the two (lesson 5). Nothing here
 * blocks: a silent client costs a pending read and a 256-byte buffer (grown
 * only for long lines or bursts), so thousands can wait at once.
 *
 * What the seed got wrong is handled: one `recv()` is not one message (the
 * `BatchLineReader` splits lines however the bytes arrive), a reset client is
 * logged and forgotten instead of crashing the loop, a flood is capped by
 * `--max-line`, silence by `--idle-timeout`, and the number of clients by
 * `--max-conns` (the rest are told `ERR server busy`). The lines that arrive
 * together are answered with one write (`ReplyBatch`), which is what makes
 * pipelining clients fast. One thing `select()` gave the seed for free:
 * every client got its turn. Deno asks the kernel which sockets are ready
 * only when nothing else is left to run, and a read whose bytes are already
 * there completes at once, so a client that always has bytes waiting could
 * keep the others waiting for seconds. After each batch, `nextPoll()` makes
 * this client wait for the next poll: one read per client per poll, as
 * `select()` gave. A log reader that stops reading never stalls the
 * server (`log`, lib/log.ts). Holding many clients needs enough file descriptors: see
 * `ulimit -n` in the README.
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' scripts/socket_server_with_select.ts
 *   deno task socket_server_with_select        (same thing)
 *
 * Try it from a second terminal:
 *   $ printf 'hello\n' | nc -N 127.0.0.1 8888
 *   OK ... hello
 * and the server prints:
 *   Client (127.0.0.1:PORT) connected
 *   Client (127.0.0.1:PORT) is offline
 *
 * Or talk to it by hand from several terminals at once (type a line, get it back):
 *   $ nc 127.0.0.1 8888
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
import { formatAddress } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";

const args = parseCli({
  name: "socket_server_with_select",
  summary: "Many clients at once on one thread; answers every line with 'OK ... <line>'.",
  options: {
    ...lineServerFlags(8888, 300),
    "max-conns": {
      kind: "integer",
      min: 1,
      max: 100_000,
      default: 10_000,
      help: "clients served at once",
    },
    quiet: { kind: "boolean", help: "do not log clients connecting and going offline" },
  },
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
  stopOnSignal("socket_server_with_select", listener, clients, log); // Ctrl+C: stop, let replies finish, exit 0
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
    if (clients.size >= args["max-conns"]) {
      turnAway(conn, log); // ERR server busy, and close it
      continue;
    }
    serve(conn); // not awaited: back to accept(); serve() catches its own errors, none escapes
  }
});

/** Answers every line of one client with `OK ... <line>`, until it leaves. */
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
      for (const line of batch) replies.add(OK, line, NEWLINE);
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
