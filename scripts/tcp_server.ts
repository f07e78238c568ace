/**
 * tcp_server.ts — a fixed-size message: for each connection, receive exactly
 * 32 bytes, print them, close, and wait for the next client.
 *
 * The seed (`tcp_server.py`) did `recv(32)` once, which returns *up to* 32
 * bytes: whatever has arrived so far. Here `readExact` (lib/io.ts) keeps
 * reading until all `--size` bytes are in, however the network splits them.
 * A client that closes early is reported as `closed after N of 32 bytes`,
 * one that has not sent all 32 within `--timeout` seconds is dropped, and bytes past
 * the 32nd are not part of the message. In every case the server goes on.
 * `--trace` prints each read to stderr: the pieces `readExact` put together.
 *
 * Like the seed, it asks `Enter the local port:` unless `--port` is given
 * (a piped answer works too: `echo 5005 | deno task tcp_server`), and listens
 * on 127.0.0.1, as the seed does (`--host` may change it). Ctrl+C at the
 * prompt ends it with `tcp_server: stopped at the prompt, before listening`
 * and exit code 0, like Ctrl+C once it listens.
 *
 * The socket calls are all here: `Deno.listen`, the accept loop, the reads
 * (`readExact`) and `close`. What makes it robust is a named call each, from
 * lib/server.ts: `stopOnSignal` (Ctrl+C), `closeWhenIdleFor` (the
 * `--timeout` deadline), `OpenClients` (what Ctrl+C closes) and
 * `whyClientFailed` (one log line, not a crash).
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' scripts/tcp_server.ts --port 5005
 *   deno task tcp_server --port 5005      (same thing)
 *
 * Try it from a second terminal with the companion client:
 *   $ deno task tcp_client --host 127.0.0.1 --port 5005
 * and the server prints:
 *   127.0.0.1:PORT sent 32 bytes: 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02 02
 *
 * Or with nc, 7 bytes and then the end of the stream:
 *   $ printf 'abcdefg' | nc -N 127.0.0.1 5005
 * and the server prints:
 *   127.0.0.1:PORT: connection closed after 7 of 32 bytes
 *
 * @module
 */

import { parseCli, parsePort, runMain, secondsToMs } from "../lib/cli.ts";
import { readExact } from "../lib/io.ts";
import { ask } from "./tcp/prompt.ts";
import {
  acceptAgain,
  closeWhenIdleFor,
  OpenClients,
  stopOnSignal,
  whyCannotListen,
  whyClientFailed,
} from "../lib/server.ts";
import { exitSoon, onStopSignal } from "../lib/signals.ts";
import { log, logError } from "../lib/log.ts";
import { formatAddress } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";

const args = parseCli({
  name: "tcp_server",
  summary: "Receives exactly --size bytes from each client, prints them in hex, closes.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "address to listen on" },
    port: { kind: "port", short: "p", help: "TCP port (asked for when absent; 0: any free port)" },
    size: { kind: "integer", min: 1, max: 1024 * 1024, default: 32, help: "bytes in one message" },
    timeout: {
      kind: "seconds",
      default: 10,
      help: "drop a client whose message is not all in within this long (0: never)",
    },
    trace: TRACE_FLAG,
  },
});

const toHex = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
const clients = new OpenClients(); // the one Ctrl+C waits for, then closes

await runMain(async () => {
  // Ctrl+C (or SIGTERM, SIGHUP) at the prompt: nothing listens yet, so nothing
  // to drain; end the prompt's line, say so, exit 0.
  const removePromptStop = onStopSignal(() => {
    log("\ntcp_server: stopped at the prompt, before listening");
    exitSoon(0, 300); // after the line, unless nobody reads it
  });
  const port = args.port ??
    await ask("tcp_server", "Enter the local port: ", parsePort, "a port from 0 to 65535");

  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: args.host, port });
  } catch (err) {
    throw await whyCannotListen(err, args.host, port); // names the address
  }
  removePromptStop(); // from here Ctrl+C stops the server: let the client finish, last line
  stopOnSignal("tcp_server", listener, clients, log);
  console.log(`listening on ${formatAddress(listener.addr)}`);
  log(`waiting for ${args.size}-byte messages`);

  while (true) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (await acceptAgain(err, log)) continue; // a client reset in the backlog: take the next
      break; // Ctrl+C closed the listener
    }
    if (args.trace) traceConn(conn, { print: logError }); // --trace: print every read and write on it
    await receive(conn); // one client at a time: the next waits in the backlog
  }
});

/** Reads exactly --size bytes from one client, prints them in hex, closes. */
async function receive(conn: Deno.TcpConn): Promise<void> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn); // aborted at Ctrl+C (which then waits, and closes conn)
  // Never restarted: the whole message must arrive within --timeout, so a
  // client trickling a byte now and then cannot hold this server.
  const deadline = closeWhenIdleFor(conn, secondsToMs(args.timeout));
  try {
    // Throws "connection closed after N of 32 bytes" if the client leaves early.
    const message = await readExact(conn, args.size);
    log(`${peer} sent ${message.length} bytes: ${toHex(message)}`);
  } catch (err) {
    if (stop.aborted) return; // Ctrl+C closed it: not the client's fault
    if (deadline?.expired) {
      log(`${peer}: not all ${args.size} bytes within ${args.timeout} s, disconnected`);
    } else log(`${peer}: ${whyClientFailed(err)}`); // one line, then the next client
  } finally {
    deadline?.stop();
    clients.close(conn);
  }
}
