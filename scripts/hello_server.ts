/**
 * hello_server.ts — the first conversation: accept one client, greet it,
 * read its answer, close.
 *
 * It keeps the seed's (`server.py`, port 50000) words: it prints `New client
 * joined: ...`, sends `Hello client!`, and prints `Client: <message>`. What
 * the seed left to luck is fixed: each message ends with `\n`, so the other
 * side knows where it stops (one `recv(2048)` may return part of a message,
 * or two); the answer is awaited at most `--timeout` seconds; the sockets
 * are closed whatever happens. The seed served one client and exited; so
 * does this, unless `--forever`.
 *
 * The socket calls are all here: `Deno.listen`, the accept loop, the
 * greeting's write, the answer's read (a `LineReader`: conn.read until the
 * `\n`) and `close`. What makes it robust is a named call each, from
 * lib/server.ts: `stopOnSignal` (Ctrl+C), `closeWhenIdleFor` (the
 * `--timeout` deadline), `OpenClients` (what Ctrl+C closes) and
 * `whyClientFailed` (one log line, not a crash).
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

import { parseCli, runMain, secondsToMs } from "../lib/cli.ts";
import { LineReader, LineTooLongError, writeAll } from "../lib/io.ts";
import {
  acceptAgain,
  closeWhenIdleFor,
  LINE_TOO_LONG,
  OpenClients,
  shutDownLine,
  stopOnSignal,
  whyCannotListen,
  whyClientFailed,
} from "../lib/server.ts";
import { log, logError } from "../lib/log.ts";
import { formatAddress, LOG_PREVIEW, showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";

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

const HELLO = new TextEncoder().encode("Hello client!\n");
const clients = new OpenClients(); // the one Ctrl+C lets finish, then closes

await runMain(async () => {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: args.host, port: args.port });
  } catch (err) {
    throw await whyCannotListen(err, args.host, args.port); // names the address
  }
  stopOnSignal("hello_server", listener, clients, log); // Ctrl+C: stop waiting for the answer, exit 0
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
    const stopped = await greet(conn); // one client at a time
    if (!args.forever && !stopped) {
      // Like the seed: one client, then exit. (Ctrl+C, had it come, prints its own last line.)
      listener.close();
      log(shutDownLine("hello_server", 0));
      break;
    }
  }
});

/** Greets one client and prints its answer. True if Ctrl+C cut it short. */
async function greet(conn: Deno.TcpConn): Promise<boolean> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn); // aborts at Ctrl+C
  // Never restarted, so a deadline: greeting and answer together get --timeout,
  // however the client trickles.
  const deadline = closeWhenIdleFor(conn, secondsToMs(args.timeout));
  log(`New client joined: ${peer}`);
  try {
    await writeAll(conn, HELLO);
    const answer = await new LineReader(conn, { signal: stop }).readLine(); // up to its \n, or its end
    if (answer === null) {
      log(`${peer} ${stop.aborted ? "closed at shutdown" : "left without a word"}`);
    } else log(`Client: ${showBytes(answer, LOG_PREVIEW)}`); // escaped: the peer's bytes must not drive the terminal
  } catch (err) {
    // Like the line servers, say why before hanging up.
    if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG).catch(() => {});
    if (!stop.aborted) log(`${peer}: ${whyClientFailed(err, deadline)}`); // one line, then the next client
  } finally {
    deadline?.stop();
    clients.close(conn);
  }
  return stop.aborted;
}
