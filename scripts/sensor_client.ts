/**
 * sensor_client.ts — a sensor that reports readings and measures each round
 * trip, with a `ping`-style summary when it stops.
 *
 * Like the seed (`client.py`), it connects to 127.0.0.1:8889 with a 10 s
 * timeout, sends `ping` and prints the connection time, then every
 * `--interval` seconds sends `ping / ('<timestamp>', <value>)` (value 102,
 * 104, ...) and prints what it sent, the reply and the round-trip time. A
 * reply slower than `--timeout` prints `Packet loss (Timeout > 10s)` and the
 * client carries on. What the seed got wrong is fixed: a late reply is not
 * mistaken for the next one (replies come in order, so the late ones are
 * counted off first), times come from the monotonic clock
 * (`performance.now()`, not wall time), and Ctrl+C or `--count N` ends with
 * a summary: sent, received, loss, and rtt min/avg/max/p99. `--json` prints
 * one JSON object per sample and one for the summary, for plotting.
 *
 * Run (start scripts/sensor_server.ts first):
 *   deno run --allow-net=127.0.0.1,[::1],localhost scripts/sensor_client.ts --count 3
 *   deno task sensor_client --count 3       (same thing)
 * Expected output (times vary):
 *   Connected to 127.0.0.1:8889 in 0.61 ms; ping answered in 1.02 ms
 *   Sent: ping / ('2026-11-28 10:00:00.123', 102) | Received: pong | RTT: 0.25 ms
 *   ...
 *   --- 127.0.0.1:8889 sensor statistics ---
 *   3 samples sent, 3 received, 0% loss
 *   rtt min/avg/max/p99 = 0.201/0.233/0.250/0.250 ms
 *
 * Without our server, nc can play it (type `pong` for each line):
 *   $ nc -l 127.0.0.1 8889
 *
 * @module
 */

import { paint, parseCli, runMain } from "../lib/cli.ts";
import { ReadTimeoutError, writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";
import { connectWithRetry, sleep } from "../lib/retry.ts";

const args = parseCli({
  name: "sensor_client",
  summary: "Sends timestamped readings, times each reply, and prints a summary.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 8889, help: "server's TCP port" },
    count: { kind: "integer", min: 0, default: 0, help: "stop after N samples (0: until Ctrl+C)" },
    interval: { kind: "seconds", default: 1, help: "seconds between samples" },
    timeout: { kind: "seconds", default: 10, help: "a reply later than this is a lost packet" },
    json: { kind: "boolean", help: "print one JSON object per sample and for the summary" },
  },
});

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const target = `${args.host}:${args.port}`;
const ms = (x: number) => x.toFixed(3);

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

await runMain(async () => {
  const t0 = performance.now();
  const conn = await connectWithRetry({
    hostname: args.host,
    port: args.port,
    attempts: 3,
    connectTimeoutMs: args.timeout * 1000,
    signal: stop.signal,
  });
  conn.setNoDelay(true); // small messages, timed: no Nagle delay
  const connectedMs = performance.now() - t0;
  const replies = new LineReader(conn, { timeoutMs: args.timeout * 1000, signal: stop.signal });
  let owedLate = 0; // replies to samples we gave up on; they still arrive, in order

  /** Sends one line and waits for its reply; returns the reply and the rtt, or null if lost. */
  async function roundTrip(message: string): Promise<{ reply: string; rtt: number } | null> {
    const start = performance.now();
    await writeAll(conn, encoder.encode(message + "\n"));
    try {
      while (true) {
        const line = await replies.readLine();
        if (line === null) {
          if (stop.signal.aborted) return null;
          throw new Error(`${target} closed the connection`);
        }
        if (owedLate > 0) {
          owedLate--; // a late reply to an earlier sample, not ours
          continue;
        }
        return { reply: decoder.decode(line), rtt: performance.now() - start };
      }
    } catch (err) {
      if (!(err instanceof ReadTimeoutError)) throw err;
      owedLate++;
      return null;
    }
  }

  const rtts: number[] = [];
  let sent = 0;
  try {
    const hello = await roundTrip("ping");
    const line = `Connected to ${target} in ${ms(connectedMs)} ms; ` +
      (hello ? `ping answered in ${ms(hello.rtt)} ms` : `ping not answered`);
    if (args.json) console.error(line);
    else console.log(paint("green", line));

    for (let value = 102; args.count === 0 || sent < args.count; value += 2) {
      if (sent > 0) await sleep(args.interval * 1000, stop.signal).catch(() => {});
      if (stop.signal.aborted) break;
      const message = `ping / ('${timestamp()}', ${value})`;
      sent++;
      const result = await roundTrip(message);
      if (stop.signal.aborted && result === null) {
        sent--; // interrupted while waiting: not a lost packet
        break;
      }
      if (result) rtts.push(result.rtt);
      if (args.json) {
        console.log(JSON.stringify(
          result
            ? { seq: sent, sent: message, reply: result.reply, rtt_ms: Number(ms(result.rtt)) }
            : { seq: sent, sent: message, lost: true },
        ));
      } else if (result) {
        console.log(`Sent: ${message} | Received: ${result.reply} | RTT: ${ms(result.rtt)} ms`);
      } else {
        console.log(paint("red", `Sent: ${message} | Packet loss (Timeout > ${args.timeout}s)`));
      }
    }
  } finally {
    conn.close();
    printSummary(sent, rtts);
  }
  Deno.exit(0); // the signal listeners would keep the process alive
});

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
