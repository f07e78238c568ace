/**
 * sensor_client.ts — a sensor that reports readings and measures each round
 * trip, with a `ping`-style summary when it stops.
 *
 * Like the seed (`client.py`), it connects to 127.0.0.1:8889 (`Deno.connect`,
 * which `connectWithRetry` calls up to 3 times, each within `--timeout` as in
 * the seed; a failed one is reported on stderr), sends `ping` and prints the connection time, then every
 * `--interval` seconds sends `ping / ('<timestamp>', <value>)` (102, 104,
 * ...) and prints the reply and the round trip, timed by the monotonic clock
 * (`performance.now()`). Each step is in `roundTrip()`: `writeAll` of the
 * line (Nagle off, `setNoDelay(true)`), then the pong up to its `\n` within
 * `--timeout` of the send, else `Packet loss (Timeout > 10s)`; a reply cut
 * off by the server closing is a loss too, and the client carries on.
 *
 * The protocol has no ids (every reply is `pong`), which the seed ignored. So
 * after a loss the client closes the connection (`conn.close()`, in `drop()`)
 * and opens a new one, where a late reply cannot arrive; and it reads all the
 * time (a `LineInbox`, scripts/sensor_client/inbox.ts) and holds the server to one line per request: a
 * line or byte that comes unasked (before a send, right behind a reply, or in
 * the pause after one) is a protocol error, printed escaped; the sample it
 * could have answered is lost (`Protocol error: ... sample N counted as lost`
 * if already printed; with `--json`, a second object for its `seq`), and the
 * client reconnects. What it has learnt so far (the open connection, the
 * reply that may yet prove stale, the tallies) lives in one object, `session`.
 *
 * Ctrl+C or `--count N` ends with a summary: sent, received, loss, and rtt
 * min/avg/max/p99 (a second Ctrl+C exits at once, code 130, without it);
 * `--json` prints JSON objects instead, for plotting. Replies are printed
 * with control bytes escaped and a backslash doubled, in `--json` too.
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
 * `--timeout`; `-k` keeps it listening for the reconnects):
 *   $ nc -lk 127.0.0.1 8889
 *
 * @module
 */

import { describeError, parseCli, runMain, secondsToMs, startHint } from "../lib/cli.ts";
import { connectWithRetry, reportAttempt, sleep } from "../lib/retry.ts";
import { type Arrival, LineInbox, nextTurn } from "./sensor_client/inbox.ts";
import { TruncatedLineError, writeAll } from "../lib/io.ts";
import { onStopSignal } from "../lib/signals.ts";
import { lossPercent, summarize } from "./sensor_client/stats.ts";
import { formatAddress, LOG_PREVIEW, paint, showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";
import { flushLogs, log, logError } from "../lib/log.ts";

const args = parseCli({
  name: "sensor_client",
  summary: "Sends timestamped readings, times each reply, and prints a summary.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 8889, help: "server's TCP port" },
    count: { kind: "integer", max: 1e6, default: 0, help: "stop after N samples (0: no limit)" },
    interval: { kind: "seconds", max: 3600, default: 1, help: "seconds between samples" },
    timeout: {
      kind: "seconds",
      default: 10,
      help: "each connect attempt waits at most this long, and a reply later than this is " +
        "lost (0: never)",
    },
    json: { kind: "boolean", help: "print one JSON object per sample and for the summary" },
    trace: TRACE_FLAG,
  },
});

const target = formatAddress({ transport: "tcp", hostname: args.host, port: args.port });
const timeoutMs = secondsToMs(args.timeout);
const ms = (x: number) => x.toFixed(3);

/** Like Python's str(datetime.now()), to milliseconds: 2026-11-28 10:00:00.123 */
function timestamp(): string {
  const d = new Date();
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** Ctrl+C or SIGTERM: every wait below ends, the run stops and prints its summary. */
const stop = new AbortController();
onStopSignal(() => stop.abort(), { name: "sensor_client" }); // a second one exits at once

/** A connection, and its lines, read all the time. */
type Link = { conn: Deno.TcpConn; inbox: LineInbox };

/** Connects: 3 attempts, each within --timeout. */
async function connect(): Promise<Link> {
  const conn = await connectWithRetry({
    connect: ({ signal }) => Deno.connect({ hostname: args.host, port: args.port, signal }),
    hostname: args.host, // (for the error lines)
    port: args.port,
    attempts: 3,
    connectTimeoutMs: timeoutMs ?? 0, // `signal` of each attempt; 0: never
    signal: stop.signal, // Ctrl+C stops the retries too
    hint: startHint("sensor_server", args.port, 8889),
    onRetry: reportAttempt(3), // "attempt 1/3 failed: ...; retrying in N ms" (stderr)
  });
  if (args.trace) traceConn(conn); // --trace: print every read and write on it
  conn.setNoDelay(true); // small lines, timed: Nagle would hold one back for the last one's ACK
  // requireNewline: a reply cut off by the server closing is not a reply.
  const options = { maxLine: 4096, requireNewline: true, signal: stop.signal };
  return { conn, inbox: new LineInbox(conn, options) };
}

/** What came that no one asked for: a line in `arrival`, or a line begun; "" if nothing. */
function unsolicited(inbox: LineInbox, arrival: Arrival | undefined): string {
  if (arrival && "line" in arrival) return `line '${showBytes(arrival.line, LOG_PREVIEW)}'`;
  if (inbox.partial.length === 0) return "";
  return `bytes '${showBytes(inbox.partial, LOG_PREVIEW)}' (no newline${arrival ? "" : " yet"})`;
}

/** Why a connection ended, for a person. */
const ended = ({ error }: { error?: unknown }) =>
  error ? `connection failed: ${describeError(error)}` : "the server closed the connection";

/** What became of one message: its reply and round trip, or lost and why. */
type Outcome = { reply: Uint8Array; rtt: number } | { lost: string };

/** Sends one line and waits for its reply, at most --timeout from the send. */
async function roundTrip({ conn, inbox }: Link, message: string): Promise<Outcome> {
  await nextTurn(); // what is already on its way reaches the inbox first
  const before = unsolicited(inbox, await inbox.next(0));
  const start = performance.now();
  try {
    await writeAll(conn, new TextEncoder().encode(`${message}\n`)); // the line and its \n, one write
  } catch (err) {
    stop.signal.throwIfAborted();
    return { lost: describeError(err) };
  }
  if (before) return { lost: `protocol error: unsolicited ${before} before it was sent` };
  const arrival = await inbox.next(timeoutMs && start + timeoutMs - performance.now());
  stop.signal.throwIfAborted();
  const late = { lost: `Timeout > ${args.timeout}s` };
  if (arrival === undefined) return late;
  if ("end" in arrival) {
    const cut = arrival.error instanceof TruncatedLineError && showBytes(arrival.error.partial);
    return { lost: cut ? `reply cut off: '${cut}' then connection closed` : ended(arrival) };
  }
  const rtt = arrival.at - start;
  if (timeoutMs !== undefined && rtt > timeoutMs) return late; // the timer may fire a bit late
  const extra = unsolicited(inbox, await inbox.next(0)); // one line per request: nothing behind it
  if (!extra) return { reply: arrival.line, rtt };
  const reply = showBytes(arrival.line, LOG_PREVIEW);
  return { lost: `protocol error: unsolicited ${extra} right after the reply '${reply}'` };
}

/** Prints what became of sample `seq`: a line, or with --json an object. */
function report(seq: number, sent: string, result: Outcome): void {
  if (args.json) {
    const reply = "rtt" in result
      ? { reply: showBytes(result.reply), rtt_ms: Number(ms(result.rtt)) }
      : { lost: true, why: result.lost };
    log(JSON.stringify({ seq, sent, ...reply }));
  } else if ("rtt" in result) {
    log(`Sent: ${sent} | Received: ${showBytes(result.reply)} | RTT: ${ms(result.rtt)} ms`);
  } else log(paint("red", `Sent: ${sent} | Packet loss (${result.lost})`));
}

/** A line of news: coloured on stdout, or on stderr beside --json. */
const say = (color: "green" | "red", text: string) =>
  args.json ? logError(text) : log(paint(color, text));

/**
 * What the run learns as it goes, in one place: which connection is open,
 * which reply may still turn out to be a stale one (every reply is `pong`,
 * so only what follows it tells), and the tallies for the summary.
 */
const session = {
  link: null as Link | null,
  /** The last reply on this connection: it stands only if nothing unasked follows it. */
  answered: undefined as { seq: number; value: number; message: string } | "ping" | undefined,
  /** Why the connection was dropped, for the reconnect line. */
  why: "",
  /** Samples sent, and the round trips of those answered. */
  sent: 0,
  rtts: [] as number[],
};

/** Closes the connection: a late reply may still be on its way, and must find it closed. */
function drop(reason: string): void {
  session.link?.conn.close();
  [session.link, session.answered, session.why] = [null, undefined, reason];
}

/** The pause between samples, on a connection that must stay quiet. */
async function pause(): Promise<void> {
  const until = performance.now() + args.interval * 1000;
  const arrival = session.link ? await session.link.inbox.next(args.interval * 1000) : undefined;
  stop.signal.throwIfAborted();
  const extra = session.link && unsolicited(session.link.inbox, arrival);
  if (extra && session.answered) { // the reply before the pause may have been a stale line
    const which = session.answered === "ping"
      ? "the opening ping"
      : `sample ${session.answered.value}`;
    const text = `Protocol error: unsolicited ${extra} after the reply to ${which}`;
    const lost = `protocol error: unsolicited ${extra} after its reply`;
    if (session.answered === "ping") say("red", text);
    else if (args.json) report(session.answered.seq, session.answered.message, { lost });
    else say("red", `${text}: ${which} counted as lost`);
    if (session.answered !== "ping") session.rtts.pop(); // its rtt was the last one counted
    drop(`protocol error after the reply to ${which}`);
  } else if (arrival && "end" in arrival) drop(ended(arrival));
  else if (session.link) return; // quiet: the reply stands
  await sleep(Math.max(0, until - performance.now()), stop.signal);
}

await runMain(async () => {
  const t0 = performance.now();
  // No server: one error line, no summary. Ctrl+C while connecting: the (empty) summary.
  session.link = await connect().catch((err) => stop.signal.aborted ? null : Promise.reject(err));
  try {
    if (session.link === null) return;
    const connected = `Connected to ${target} in ${ms(performance.now() - t0)} ms; ping`;
    const hello = await roundTrip(session.link, "ping");
    const ping = "lost" in hello
      ? `not answered (${hello.lost})`
      : `answered in ${ms(hello.rtt)} ms`;
    say("green", `${connected} ${ping}`);
    if ("lost" in hello) drop(`ping: ${hello.lost}`); // a late pong must not pass for 102's
    else session.answered = "ping";

    for (let value = 102; args.count === 0 || session.sent < args.count; value += 2) {
      await pause();
      if (session.link === null) {
        const text =
          `${session.why}: reconnecting, so that a late reply cannot pass for the next one`;
        logError(paint("dim", text, "stderr"));
        session.link = await connect();
      }
      const message = `ping / ('${timestamp()}', ${value})`;
      const result = await roundTrip(session.link, message);
      report(++session.sent, message, result);
      if ("lost" in result) {
        drop(`sample ${value} lost`);
      } else {
        session.rtts.push(result.rtt);
        session.answered = { seq: session.sent, value, message }; // stands if the pause after it stays quiet
      }
    }
    if (session.answered !== undefined) await pause(); // the last reply, too, stands only if it is alone
  } catch (err) {
    if (!stop.signal.aborted) throw err; // Ctrl+C ends the run: not an error
  } finally {
    session.link?.conn.close(); // (drop() closed the ones before it)
    printSummary();
  }
});
await flushLogs(); // the last --trace lines
Deno.exit(0); // the signal listeners would keep the process alive

function printSummary(): void {
  const [received, loss, rtt] = [
    session.rtts.length,
    lossPercent(session.sent, session.rtts.length),
    summarize(session.rtts),
  ];
  if (args.json) {
    const rtt_ms = rtt && Object.fromEntries(Object.entries(rtt).map(([k, v]) => [k, +ms(v)]));
    log(JSON.stringify({ summary: { sent: session.sent, received, loss_pct: loss, rtt_ms } }));
    return;
  }
  log(`--- ${target} sensor statistics ---`);
  log(`${session.sent} samples sent, ${received} received, ${loss}% loss`);
  if (rtt) log(`rtt min/avg/max/p99 = ${Object.values(rtt).map(ms).join("/")} ms`);
}
