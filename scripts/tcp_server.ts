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

import { parseCli, parsePort, runMain, TRACE_FLAG } from "../lib/cli.ts";
import { closeWhenIdle, secondsToMs } from "../lib/deadline.ts";
import { ReadTimeoutError } from "../lib/errors.ts";
import { readExact } from "../lib/io.ts";
import { ask } from "../lib/prompt.ts";
import { listen, TcpServer } from "../lib/server.ts";
import { onStopSignal } from "../lib/signals.ts";
import { traceConn } from "../lib/trace.ts";
import { flushLogs, log } from "../lib/log.ts";

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

await runMain(async () => {
  // Ctrl+C (or SIGTERM, SIGHUP) at the prompt: nothing listens yet, so nothing
  // to drain; end the prompt's line, say so, exit 0.
  const removePromptStop = onStopSignal(async () => {
    log("\ntcp_server: stopped at the prompt, before listening");
    await flushLogs(); // unless nobody reads it (a closed terminal)
    Deno.exit(0);
  });
  const port = args.port ??
    await ask("tcp_server", "Enter the local port: ", parsePort, "a port from 0 to 65535");
  const listener = await listen(args.host, port);
  removePromptStop(); // from here the server's own handler stops it (drain, last line)
  const server = new TcpServer(listener, { name: "tcp_server" });
  log(`waiting for ${args.size}-byte messages`);
  for await (const conn of server.accept()) {
    if (args.trace) traceConn(conn); // --trace: print every read and write on it
    await server.handle(conn, ({ peer }) =>
      // The whole message must arrive within --timeout: a client trickling a
      // byte now and then cannot hold this one-client-at-a-time server.
      closeWhenIdle(conn, secondsToMs(args.timeout), async () => {
        // Throws "connection closed after N of 32 bytes" if the client leaves early;
        // server.handle logs that in one line and closes the connection.
        const message = await readExact(conn, args.size);
        log(`${peer} sent ${message.length} bytes: ${toHex(message)}`);
      }).catch((err) => {
        if (!(err instanceof ReadTimeoutError)) throw err;
        throw new Error(`not all ${args.size} bytes within ${args.timeout} s, disconnected`);
      }));
  }
});
