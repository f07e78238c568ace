/**
 * tcp_client.ts — keep trying to connect, then send one fixed-size message:
 * an array of 32 bytes of 0x02.
 *
 * Like the seed (`tcp_client.py`) it asks for the remote IP address and port
 * unless `--host`/`--port` are given (piped answers work too), tries to
 * connect (`Deno.connect`), and gives up after 5 attempts (`--attempts`). The
 * seed retried at a fixed pace; here the delay grows (exponential backoff
 * with jitter: `connectWithRetry`, in lib/retry.ts, calls our
 * `Deno.connect` again after each failure), each attempt waits at most
 * `--timeout` (a server whose backlog is full never answers), and each
 * failed attempt says why, on stderr (stdout keeps what the client did, like
 * every client here). Only failures a retry can cure are retried: a refused
 * port is, a mistyped host name is not. The message is sent with `writeAll`,
 * since one `write` may send fewer bytes, and `conn.close()` ends it (the
 * server sees the end of the stream after the bytes). An IPv6 address may be typed bare
 * (`::1`) or in brackets (`[::1]`). Port 0 (a server's "any free port") is a
 * usage error here: there is nothing to connect to.
 *
 * Run (start scripts/tcp_server.ts first):
 *   deno run --allow-net scripts/tcp_client.ts --host 127.0.0.1 --port 5005
 *   deno task tcp_client --host 127.0.0.1 --port 5005     (same thing)
 * Expected output:
 *   connected to 127.0.0.1:5005
 *   sent 32 bytes of 0x02
 *
 * Without our server, nc can receive and show the bytes:
 *   $ nc -l 127.0.0.1 5005 | od -An -tx1 -v
 *
 * @module
 */

import { parseCli, parsePort, runMain, secondsToMs, startHint, usageError } from "../lib/cli.ts";
import { ATTEMPTS_FLAG, connectWithRetry, reportAttempt } from "../lib/retry.ts";
import { writeAll } from "../lib/io.ts";
import { ask } from "./tcp/prompt.ts";
import { formatAddress } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";
const args = parseCli({
  name: "tcp_client",
  summary: "Connects with up to --attempts tries and sends --size bytes of --byte.",
  options: {
    host: { kind: "host", help: "server address (asked for when absent)" },
    port: { kind: "port", short: "p", help: "server port (asked for when absent)" },
    attempts: ATTEMPTS_FLAG,
    timeout: {
      kind: "seconds",
      default: 10,
      help: "each connect attempt waits at most this long (0: never)",
    },
    size: { kind: "integer", min: 0, max: 1_048_576, default: 32, help: "bytes to send" },
    byte: {
      kind: "string",
      default: "0x02",
      valueName: "BYTE",
      help: "the byte value, 0-255 or 0x00-0xff",
    },
    trace: TRACE_FLAG,
  },
});

/** "0x02", "2" -> 2; anything else is not a byte. */
function parseByte(text: string): number | undefined {
  const value = /^0x[0-9a-f]{1,2}$/i.test(text)
    ? parseInt(text, 16)
    : /^\d{1,3}$/.test(text)
    ? Number(text)
    : NaN;
  return value >= 0 && value <= 255 ? value : undefined;
}

// Port 0 means "any free port" to a server; a client cannot connect to it.
if (args.port === 0) {
  usageError("tcp_client", "invalid --port '0': expected a port from 1 to 65535");
}

/** An answer to the address prompt: `[::1]` is written the URL way; the address is `::1`. */
function parseHost(answer: string): string | undefined {
  const host = /^\[.*\]$/.test(answer) ? answer.slice(1, -1).trim() : answer;
  return host || undefined;
}

const byte = parseByte(args.byte) ??
  usageError("tcp_client", `invalid --byte '${args.byte}': expected 0-255 or 0x00-0xff`);

await runMain(async () => {
  const host = args.host ??
    await ask("tcp_client", "Enter the remote IP address: ", parseHost, "an address");
  const port = args.port ??
    await ask(
      "tcp_client",
      "Enter the remote port: ",
      (a) => parsePort(a) || undefined,
      "a port from 1 to 65535",
    );
  const target = formatAddress({ transport: "tcp", hostname: host, port });

  // 1. Connect: the server may not be up yet, so a refusal is tried again, with growing waits.
  const conn = await connectWithRetry({
    connect: ({ signal }) => Deno.connect({ hostname: host, port, signal }),
    hostname: host, // (for the error lines)
    port,
    attempts: args.attempts,
    // Each attempt within --timeout (`signal`; 0: never).
    connectTimeoutMs: secondsToMs(args.timeout) ?? 0,
    hint: startHint("tcp_server", port),
    onRetry: reportAttempt(args.attempts), // "attempt 1/5 failed: ...; retrying in N ms" (stderr)
  });
  if (args.trace) traceConn(conn); // --trace: print every read and write on it
  try {
    console.log(`connected to ${target}`);
    // 2. Send: one write() may take only part of the bytes (a full send buffer), so
    // writeAll loops until every byte is gone. (tcp_server reads exactly 32 of them.)
    await writeAll(conn, new Uint8Array(args.size).fill(byte));
    console.log(`sent ${args.size} bytes of 0x${byte.toString(16).padStart(2, "0")}`);
  } finally {
    conn.close(); // 3. Close: the server sees the end of the stream after the bytes
  }
});
