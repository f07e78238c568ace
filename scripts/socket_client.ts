/**
 * socket_client.ts — connects to a line server (retrying while it starts),
 * sends messages such as sensor readings or control commands, one per line,
 * and prints each reply.
 *
 * Messages come from `--message` (repeatable), else from standard input when
 * it is a pipe or a file (one message per line), else (a terminal, or empty
 * input) one sample reading. A message is one line, so a `--message` holding
 * a newline is refused: the server would answer it twice. The seed
 * (`socket_client.py`) assumed one `recv(4096)` returns the whole reply; here
 * each reply is read up to its `\n`, however it is split, with a `--timeout`
 * so that a server that never answers cannot hang the client. A reply cut off
 * by the server closing before its `\n` is an error, not a reply. Replies are
 * printed as the server's bytes, with control bytes escaped (`\x1b`, `\r`) so
 * a server cannot drive your terminal. A server that is not up yet is retried
 * `--attempts` times with growing delays. Progress goes to stderr, replies to
 * stdout, so output can be piped.
 *
 * Run (start scripts/socket_server.ts first):
 *   deno run --allow-net='127.0.0.1,[::1],localhost' scripts/socket_client.ts --message hello
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

import {
  CliError,
  paint,
  parseCli,
  runMain,
  showBytes,
  startHint,
  usageError,
} from "../lib/cli.ts";
import { concatBytes, ReadTimeoutError, secondsToMs, writeAll } from "../lib/io.ts";
import { LineReader, LineTooLongError, TruncatedLineError } from "../lib/lines.ts";
import { connectWithRetry } from "../lib/retry.ts";
import { formatAddress } from "../lib/server.ts";

const args = parseCli({
  name: "socket_client",
  summary: "Sends messages to a line server and prints each reply.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 8888, help: "server's TCP port" },
    message: {
      kind: "strings",
      short: "m",
      help: "a message to send, one line (repeatable). Without -m: each line of stdin when " +
        "stdin is a pipe or file; on a terminal, or with empty input, one sample reading",
    },
    attempts: {
      kind: "integer",
      min: 1,
      max: 100,
      default: 5,
      help: "connection attempts before giving up",
    },
    timeout: { kind: "seconds", default: 10, help: "wait this long for each reply (0: forever)" },
  },
});

const encoder = new TextEncoder();
for (const m of args.message) {
  if (/[\r\n]/.test(m)) {
    usageError(
      "socket_client",
      `--message '${showBytes(encoder.encode(m))}' holds a line break: ` +
        `a message is one line; give one --message per line`,
    );
  }
}

/** Longest stdin line sent; a reply is this plus the server's prefix. */
const MAX_INPUT_LINE = 64 * 1024;
const MAX_REPLY = MAX_INPUT_LINE + 1024;
const SAMPLE_READING = `sensor-1 temperature=21.5C at ${new Date().toISOString()}`;
const target = formatAddress({ transport: "tcp", hostname: args.host, port: args.port });
const status = (text: string) => console.error(paint("dim", text));

/** The messages to send, read lazily so a long pipe is streamed, not loaded. */
async function* messages(): AsyncGenerator<Uint8Array> {
  if (args.message.length > 0) {
    for (const m of args.message) yield encoder.encode(m);
    return;
  }
  if (!Deno.stdin.isTerminal()) {
    const input = new LineReader(Deno.stdin, { maxLine: MAX_INPUT_LINE });
    for (let n = 1;; n++) {
      const line = await input.readLine().catch((err) => {
        if (!(err instanceof LineTooLongError)) throw err;
        throw new CliError(`input line ${n} is longer than ${MAX_INPUT_LINE} bytes`);
      });
      if (line === null) {
        if (n > 1) return;
        break; // empty input: send the sample
      }
      yield line;
    }
  }
  yield encoder.encode(SAMPLE_READING);
}

await runMain(async () => {
  const conn = await connectWithRetry({
    hostname: args.host,
    port: args.port,
    attempts: args.attempts,
    hint: startHint("socket_server", args.port, 8888),
    onRetry: ({ attempt, error, delayMs }) =>
      status(
        `attempt ${attempt}/${args.attempts} failed: ${error.message}` +
          (delayMs === undefined ? "" : `; retrying in ${delayMs} ms`),
      ),
  });
  try {
    conn.setNoDelay(true);
    status(`connected to ${target}`);
    // requireNewline: a reply is complete only once its `\n` has arrived.
    const replies = new LineReader(conn, {
      timeoutMs: secondsToMs(args.timeout),
      maxLine: MAX_REPLY,
      requireNewline: true,
    });
    for await (const message of messages()) {
      // One write per message: the line and its newline together.
      await writeAll(conn, concatBytes([message, encoder.encode("\n")]));
      const reply = await replies.readLine().catch((err) => {
        if (err instanceof TruncatedLineError) {
          throw new CliError(
            `the reply was cut off: ${target} closed the connection after ` +
              `'${showBytes(err.partial)}' (no newline)`,
          );
        }
        if (err instanceof LineTooLongError) {
          throw new CliError(`a reply from ${target} is longer than ${MAX_REPLY} bytes`);
        }
        if (err instanceof ReadTimeoutError) {
          // Connected but unanswered: the classic sign of a one-client-at-a-time server.
          throw new CliError(
            `no reply from ${target} within ${args.timeout} s (--timeout): is the server busy ` +
              `with another client? (socket_server serves one at a time; the others wait)`,
          );
        }
        throw err;
      });
      if (reply === null) throw new CliError(`${target} closed the connection before replying`);
      console.log(showBytes(reply)); // the server's bytes, but never raw control bytes
    }
  } finally {
    conn.close();
  }
});
