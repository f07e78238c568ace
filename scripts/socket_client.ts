/**
 * socket_client.ts — connects to a line server (retrying while it starts),
 * sends messages such as sensor readings or control commands, one per line,
 * and prints each reply.
 *
 * Messages come from `--message` (repeatable), else from standard input when
 * it is a pipe or a file (one message per line), else one sample reading.
 * The seed (`socket_client.py`) assumed one `recv(4096)` returns the whole
 * reply; here each reply is read up to its `\n`, however it is split, with a
 * `--timeout` so that a server that never answers cannot hang the client.
 * A server that is not up yet is retried `--attempts` times with growing
 * delays. Progress goes to stderr, replies to stdout, so output can be piped.
 *
 * Run (start scripts/socket_server.ts first):
 *   deno run --allow-net=127.0.0.1,[::1],localhost scripts/socket_client.ts --message hello
 *   deno task socket_client --message hello     (same thing)
 * Expected output:
 *   OK ... hello
 *
 * Pipe many messages, one per line:
 *   $ printf 'temp 21.5\nhumidity 40\n' | deno task socket_client
 *   OK ... temp 21.5
 *   OK ... humidity 40
 *
 * Without our server, a listening `nc` plays the server (type replies in it):
 *   $ nc -l 127.0.0.1 8888
 *
 * @module
 */

import { paint, parseCli, runMain } from "../lib/cli.ts";
import { concatBytes, writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";
import { connectWithRetry } from "../lib/retry.ts";

const args = parseCli({
  name: "socket_client",
  summary: "Sends messages to a line server and prints each reply.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 8888, help: "server's TCP port" },
    message: {
      kind: "strings",
      short: "m",
      help: "a message to send (repeatable); default: stdin lines",
    },
    attempts: { kind: "integer", min: 1, default: 5, help: "connection attempts before giving up" },
    timeout: { kind: "seconds", default: 10, help: "wait this long for each reply" },
  },
});

const SAMPLE_READING = `sensor-1 temperature=21.5C at ${new Date().toISOString()}`;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const status = (text: string) => console.error(paint("dim", text));

/** The messages to send, read lazily so a long pipe is streamed, not loaded. */
async function* messages(): AsyncGenerator<Uint8Array> {
  if (args.message.length > 0) {
    for (const m of args.message) yield encoder.encode(m);
    return;
  }
  if (!Deno.stdin.isTerminal()) {
    let any = false;
    for await (const line of new LineReader(Deno.stdin)) {
      any = true;
      yield line;
    }
    if (any) return;
  }
  yield encoder.encode(SAMPLE_READING);
}

await runMain(async () => {
  const conn = await connectWithRetry({
    hostname: args.host,
    port: args.port,
    attempts: args.attempts,
    onRetry: ({ attempt, error, delayMs }) =>
      status(
        `attempt ${attempt}/${args.attempts} failed: ${error.message}` +
          (delayMs === undefined ? "" : `; retrying in ${delayMs} ms`),
      ),
  });
  try {
    conn.setNoDelay(true);
    status(`connected to ${args.host}:${args.port}`);
    const replies = new LineReader(conn, { timeoutMs: args.timeout * 1000 });
    for await (const message of messages()) {
      // One write per message: the line and its newline together.
      await writeAll(conn, concatBytes([message, encoder.encode("\n")]));
      const reply = await replies.readLine();
      if (reply === null) throw new Error("the server closed the connection before replying");
      console.log(decoder.decode(reply));
    }
  } finally {
    conn.close();
  }
});
