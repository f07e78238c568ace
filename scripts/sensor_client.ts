/**
 * sensor_client.ts — a sensor that reports readings and measures each round
 * trip, with a `ping`-style summary when it stops.
 *
 * Like the seed (`client.py`), it connects to 127.0.0.1:8889 with a 10 s
 * timeout, sends `ping` and prints the connection time, then every
 * `--interval` seconds sends `ping / ('<timestamp>', <value>)` (value 102,
 * 104, ...) and prints what it sent, the reply and the round-trip time. A
 * sample whose reply is not complete (up to its `\n`) within `--timeout` of
 * its send prints `Packet loss (Timeout > 10s)` and the client carries on;
 * so does a reply cut off by the server closing (`Packet loss (...)` says
 * why). What the seed got wrong is fixed. A late reply is never mistaken for
 * the next sample's: the protocol has no ids (every reply is `pong`), so
 * after a loss the client closes the connection and opens a new one, where
 * no earlier reply can still arrive. Times come from the monotonic clock
 * (`performance.now()`, not wall time). Ctrl+C or `--count N` ends with a
 * summary: sent, received, loss, and rtt min/avg/max/p99. `--json` prints
 * one JSON object per sample and one for the summary, for plotting. Replies
 * are printed with control bytes escaped, so a server cannot drive your
 * terminal.
 *
 * Run (start scripts/sensor_server.ts first):
 *   deno run --allow-net='127.0.0.1,[::1],localhost' scripts/sensor_client.ts --count 3
 *   deno task sensor_client --count 3       (same thing)
 * Expected output (times vary):
 *   Connected to 127.0.0.1:8889 in 0.61 ms; ping answered in 1.02 ms
 *   Sent: ping / ('2026-11-28 10:00:00.123', 102) | Received: pong | RTT: 0.25 ms
 *   ...
 *   --- 127.0.0.1:8889 sensor statistics ---
 *   3 samples sent, 3 received, 0% loss
 *   rtt min/avg/max/p99 = 0.201/0.233/0.250/0.250 ms
 *
 * Without our server, nc can play it (type `pong` for each line within
 * `--timeout`; `-k` keeps it listening, since the client reconnects after a
 * loss):
 *   $ nc -lk 127.0.0.1 8889
 *
 * @module
 */

import { paint, parseCli, runMain, showBytes } from "../lib/cli.ts";
import { ReadTimeoutError, secondsToMs, writeAll } from "../lib/io.ts";
import { LineReader, TruncatedLineError } from "../lib/lines.ts";
import { connectWithRetry, sleep } from "../lib/retry.ts";
import { closeQuietly, formatAddress } from "../lib/server.ts";

const args = parseCli({
  name: "sensor_client",
  summary: "Sends timestamped readings, times each reply, and prints a summary.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 8889, help: "server's TCP port" },
    count: {
      kind: "integer",
      min: 0,
      max: 1_000_000,
      default: 0,
      help: "stop after N samples (0: until Ctrl+C)",
    },
    interval: { kind: "seconds", max: 3600, default: 1, help: "seconds between samples" },
    timeout: {
      kind: "seconds",
      default: 10,
      help: "a reply later than this after its send is a lost packet (0: wait forever)",
    },
    json: { kind: "boolean", help: "print one JSON object per sample and for the summary" },
  },
});

const encoder = new TextEncoder();
const target = formatAddress({ transport: "tcp", hostname: args.host, port: args.port });
const timeoutMs = secondsToMs(args.timeout);
const ms = (x: number) => x.toFixed(3);
const status = (text: string) => console.error(paint("dim", text));

/** Like Python's str(datetime.now()), to milliseconds: 2026-11-28 10:00:00.123 */
function timestamp(): string {
  const d = new Date();
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** Ctrl+C or SIGTERM ends the run (with its summary) instead of killing it. */
const stop = new AbortController();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  if (signal === "SIGTERM" && Deno.build.os === "windows") continue;
  Deno.addSignalListener(signal, () => stop.abort());
}

/** One connection and the reader of its replies. */
interface Link {
  conn: Deno.TcpConn;
  replies: LineReader;
}

/** Connects (3 attempts); `null` when Ctrl+C came first. */
async function connect(): Promise<Link | null> {
  try {
    const conn = await connectWithRetry({
      hostname: args.host,
      port: args.port,
      attempts: 3,
      connectTimeoutMs: timeoutMs,
      signal: stop.signal,
      hint: "start it with deno task sensor_server",
    });
    conn.setNoDelay(true); // small messages, timed: no Nagle delay
    // requireNewline: a reply cut off by the server closing is not a reply.
    const replies = new LineReader(conn, {
      timeoutMs,
      signal: stop.signal,
      maxLine: 4096,
      requireNewline: true,
    });
    return { conn, replies };
  } catch (err) {
    if (stop.signal.aborted) return null;
    throw err;
  }
}

/** What became of one message: a reply in time, lost (and why), or interrupted by Ctrl+C. */
type Outcome = { reply: Uint8Array; rtt: number } | { lost: string } | { interrupted: true };

/** Sends one line and waits for its reply, at most `--timeout` from the send. */
async function roundTrip(link: Link, message: string): Promise<Outcome> {
  const start = performance.now();
  try {
    await writeAll(link.conn, encoder.encode(message + "\n"));
    const line = await link.replies.readLine();
    const rtt = performance.now() - start;
    if (line === null) {
      return stop.signal.aborted ? { interrupted: true } : { lost: "connection closed" };
    }
    // The reader's deadline may fire a little late: the rule is the clock from the send.
    if (timeoutMs !== undefined && rtt > timeoutMs) return { lost: `Timeout > ${args.timeout}s` };
    return { reply: line.slice(), rtt };
  } catch (err) {
    if (stop.signal.aborted) return { interrupted: true };
    if (err instanceof TruncatedLineError) {
      return { lost: `reply cut off: '${showBytes(err.partial)}' then connection closed` };
    }
    if (err instanceof ReadTimeoutError) return { lost: `Timeout > ${args.timeout}s` };
    return { lost: (err instanceof Error ? err.message : String(err)).split("\n")[0] };
  }
}

await runMain(async () => {
  const t0 = performance.now();
  let link = await connect();
  const connectedMs = performance.now() - t0;
  const rtts: number[] = [];
  let sent = 0;
  try {
    if (link === null) return; // Ctrl+C while connecting
    const hello = await roundTrip(link, "ping");
    if ("interrupted" in hello) return;
    const line = `Connected to ${target} in ${ms(connectedMs)} ms; ` +
      ("rtt" in hello
        ? `ping answered in ${ms(hello.rtt)} ms`
        : `ping not answered (${hello.lost})`);
    if (args.json) console.error(line);
    else console.log(paint("green", line));
    // After a loss the old connection is closed at once (its late reply may
    // still be on the way) and the next sample goes out on a new one.
    let lost = "lost" in hello ? `ping: ${hello.lost}` : undefined;
    if (lost) closeQuietly(link.conn);

    for (let value = 102; args.count === 0 || sent < args.count; value += 2) {
      if (sent > 0) await sleep(args.interval * 1000, stop.signal).catch(() => {});
      if (stop.signal.aborted) break;
      if (lost) {
        status(`${lost}: reconnecting, so that a late reply cannot pass for the next one`);
        const fresh = await connect();
        if (fresh === null) break; // Ctrl+C
        link = fresh;
        lost = undefined;
      }
      const message = `ping / ('${timestamp()}', ${value})`;
      sent++;
      const result = await roundTrip(link, message);
      if ("interrupted" in result) {
        sent--; // interrupted while waiting: not a lost packet
        break;
      }
      if ("rtt" in result) rtts.push(result.rtt);
      if (args.json) {
        console.log(JSON.stringify(
          "rtt" in result
            ? {
              seq: sent,
              sent: message,
              reply: showBytes(result.reply),
              rtt_ms: Number(ms(result.rtt)),
            }
            : { seq: sent, sent: message, lost: true, why: result.lost },
        ));
      } else if ("rtt" in result) {
        console.log(
          `Sent: ${message} | Received: ${showBytes(result.reply)} | RTT: ${ms(result.rtt)} ms`,
        );
      } else {
        console.log(paint("red", `Sent: ${message} | Packet loss (${result.lost})`));
      }
      if ("lost" in result) {
        lost = `sample ${value} lost`;
        closeQuietly(link.conn);
      }
    }
  } finally {
    if (link) closeQuietly(link.conn);
    printSummary(sent, rtts);
  }
});
Deno.exit(0); // the signal listeners would keep the process alive

function printSummary(sent: number, rtts: number[]) {
  const received = rtts.length;
  const loss = sent === 0 ? 0 : Math.round((sent - received) / sent * 1000) / 10;
  const sorted = [...rtts].sort((a, b) => a - b);
  const stats = received === 0 ? null : {
    min: sorted[0],
    avg: rtts.reduce((a, b) => a + b, 0) / received,
    max: sorted[received - 1],
    p99: sorted[Math.ceil(0.99 * received) - 1], // nearest rank
  };
  if (args.json) {
    const rtt = stats &&
      Object.fromEntries(Object.entries(stats).map(([k, v]) => [k, Number(ms(v))]));
    console.log(JSON.stringify({ summary: { sent, received, loss_pct: loss, rtt_ms: rtt } }));
    return;
  }
  console.log(`--- ${target} sensor statistics ---`);
  console.log(`${sent} samples sent, ${received} received, ${loss}% loss`);
  if (stats) {
    console.log(
      `rtt min/avg/max/p99 = ${ms(stats.min)}/${ms(stats.avg)}/${ms(stats.max)}/${
        ms(stats.p99)
      } ms`,
    );
  }
}
