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
 * no earlier reply can still arrive.
 *
 * No ids also means a server that sends extra or early lines could pass a
 * stale `pong` off as a reply, so the client reads all the time and holds
 * the server to one line per request. A line, or any byte, that comes when
 * no reply is awaited is unsolicited: one already there when a sample is
 * sent, one right behind a reply, one during the `--interval` pause after a
 * reply (the last sample's too: the client pauses once more before its
 * summary). The client prints it as a protocol error (escaped), counts the
 * sample it could have answered as lost (for a line after a reply: the
 * sample whose reply it was, which may itself have been stale; it prints
 * `Protocol error: ... sample N counted as lost`, and in `--json` a second
 * object for that `seq`, with `lost`), and reconnects, exactly as after a
 * loss. So the summary never counts a stale line as a reply. (A stray line
 * still on the wire at the very moment a sample is sent cannot be told from
 * its reply; the pause after that reply then shows the reply's own line as
 * the extra one, and the sample is lost after all.)
 *
 * Times come from the monotonic clock
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

import { paint, parseCli, runMain, showBytes, startHint } from "../lib/cli.ts";
import { nextTurn, secondsToMs, writeAll } from "../lib/io.ts";
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

/** What came from the server, in order: a line (and when), the end, or a failure. */
type Arrival =
  | { line: Uint8Array; at: number }
  | { end: true } // end of stream, or Ctrl+C
  | { error: unknown }; // cut off mid-line, too long, reset

/** Shown bytes of unsolicited data are capped: a flood is not printed whole. */
const SHOW_MAX = 200;

/**
 * One connection, read all the time: every line the server sends is noted as
 * it arrives, asked for or not, so that a line nobody asked for is seen (the
 * pong protocol has no ids, so only the timing tells a stale line apart).
 */
class Link {
  readonly conn: Deno.TcpConn;
  readonly #lines: LineReader;
  readonly #arrived: Arrival[] = [];
  #wake: (() => void) | undefined;
  #tail = new Uint8Array(0); // bytes after the last newline so far (the first SHOW_MAX)
  #tailLength = 0;

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    // The reader reads through this counter, which notes the bytes after the
    // last newline: part of a line that is still coming.
    const counted = {
      read: async (p: Uint8Array) => {
        const n = await conn.read(p);
        if (n) this.#count(p.subarray(0, n));
        return n;
      },
    };
    // requireNewline: a reply cut off by the server closing is not a reply.
    this.#lines = new LineReader(counted, {
      signal: stop.signal,
      maxLine: 4096,
      requireNewline: true,
    });
    this.#pump();
  }

  #count(bytes: Uint8Array): void {
    const newline = bytes.lastIndexOf(0x0a);
    if (newline !== -1) {
      this.#tail = bytes.slice(newline + 1, newline + 1 + SHOW_MAX);
      this.#tailLength = bytes.length - newline - 1;
      return;
    }
    if (this.#tail.length < SHOW_MAX) {
      const more = bytes.subarray(0, SHOW_MAX - this.#tail.length);
      const joined = new Uint8Array(this.#tail.length + more.length);
      joined.set(this.#tail);
      joined.set(more, this.#tail.length);
      this.#tail = joined;
    }
    this.#tailLength += bytes.length;
  }

  /** Reads lines until the end; every line of one read is noted at once. */
  async #pump(): Promise<void> {
    try {
      while (true) {
        const line = await this.#lines.readLine();
        if (line === null) return this.#note({ end: true });
        const at = performance.now();
        this.#arrived.push({ line: line.slice(), at });
        for (let more = this.#lines.readBufferedLine(); more !== null;) {
          this.#arrived.push({ line: more.slice(), at });
          more = this.#lines.readBufferedLine();
        }
        this.#note();
      }
    } catch (error) {
      this.#note({ error });
    }
  }

  #note(arrival?: Arrival): void {
    if (arrival) this.#arrived.push(arrival);
    this.#wake?.();
  }

  /**
   * The next arrival, or `undefined` when `ms` passed first (`undefined`
   * ms: wait as long as it takes). The end and a failure stay: they are
   * what every later call gets.
   */
  next(ms: number | undefined): Promise<Arrival | undefined> {
    const take = () => {
      const first = this.#arrived[0];
      if (first !== undefined && "line" in first) this.#arrived.shift();
      return first;
    };
    if (this.#arrived.length > 0) return Promise.resolve(take());
    return new Promise((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(() => {
        this.#wake = undefined;
        resolve(undefined);
      }, Math.max(0, ms));
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve(take());
      };
    });
  }

  /**
   * What the server sent that nobody is waiting for, described, or
   * `undefined`: a whole line, or bytes of one still coming (also when the
   * stream then ended in the middle of it).
   */
  unsolicited(): string | undefined {
    const first = this.#arrived[0];
    if (first !== undefined && "line" in first) {
      return `line '${showBytes(first.line, SHOW_MAX)}'`;
    }
    if (first !== undefined && "error" in first && first.error instanceof TruncatedLineError) {
      return `bytes '${showBytes(first.error.partial, SHOW_MAX)}' (no newline)`;
    }
    if (this.#tailLength > 0) {
      return `bytes '${showBytes(this.#tail)}${
        this.#tailLength > SHOW_MAX ? "..." : ""
      }' (no newline yet)`;
    }
    return undefined;
  }
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
      hint: startHint("sensor_server", args.port, 8889),
    });
    conn.setNoDelay(true); // small messages, timed: no Nagle delay
    return new Link(conn);
  } catch (err) {
    if (stop.signal.aborted) return null;
    throw err;
  }
}

/** What became of one message: a reply in time, lost (and why), or interrupted by Ctrl+C. */
type Outcome = { reply: Uint8Array; rtt: number } | { lost: string } | { interrupted: true };

const firstLine = (err: unknown) =>
  (err instanceof Error ? err.message : String(err)).split("\n")[0];

/**
 * Sends one line and waits for its reply, at most `--timeout` from the send.
 * A reply counts only if it is the one thing the server sent: data already
 * waiting before the send, or more right behind the reply, is unsolicited,
 * and the message is lost.
 */
async function roundTrip(link: Link, message: string): Promise<Outcome> {
  await nextTurn(); // bytes that are already here reach the reader first
  const before = link.unsolicited();
  const start = performance.now();
  try {
    await writeAll(link.conn, encoder.encode(message + "\n"));
  } catch (err) {
    return stop.signal.aborted ? { interrupted: true } : { lost: firstLine(err) };
  }
  if (before) return { lost: `protocol error: unsolicited ${before} before it was sent` };
  const arrival = await link.next(
    timeoutMs === undefined ? undefined : start + timeoutMs - performance.now(),
  );
  if (stop.signal.aborted) return { interrupted: true };
  if (arrival === undefined) return { lost: `Timeout > ${args.timeout}s` };
  if ("end" in arrival) return { lost: "connection closed" };
  if ("error" in arrival) {
    const err = arrival.error;
    if (err instanceof TruncatedLineError) {
      return { lost: `reply cut off: '${showBytes(err.partial)}' then connection closed` };
    }
    return { lost: firstLine(err) };
  }
  const rtt = arrival.at - start;
  // The timer may fire a little late: the rule is the clock from the send.
  if (timeoutMs !== undefined && rtt > timeoutMs) return { lost: `Timeout > ${args.timeout}s` };
  const extra = link.unsolicited();
  if (extra) {
    return {
      lost: `protocol error: unsolicited ${extra} right after the reply '${
        showBytes(arrival.line, SHOW_MAX)
      }'`,
    };
  }
  return { reply: arrival.line, rtt };
}

/** How a pause on an open connection ended. */
type Watched = "quiet" | "interrupted" | { unsolicited: string } | { closed: string };

/** Waits `ms` on `link`, watching for anything the server sends unasked. */
async function watch(link: Link, ms: number): Promise<Watched> {
  const arrival = await link.next(ms);
  if (stop.signal.aborted) return "interrupted";
  if (arrival === undefined) {
    const extra = link.unsolicited(); // part of a line came
    return extra ? { unsolicited: extra } : "quiet";
  }
  if ("line" in arrival) return { unsolicited: `line '${showBytes(arrival.line, SHOW_MAX)}'` };
  if ("error" in arrival && arrival.error instanceof TruncatedLineError) {
    return { unsolicited: link.unsolicited()! };
  }
  return {
    closed: "end" in arrival
      ? "the server closed the connection"
      : `connection failed: ${firstLine(arrival.error)}`,
  };
}

await runMain(async () => {
  const t0 = performance.now();
  let link = await connect();
  const connectedMs = performance.now() - t0;
  const rtts: number[] = [];
  let sent = 0;
  /** Whose reply came last on this connection; it stands only if nothing unasked follows. */
  let answered: "ping" | { seq: number; value: number; message: string } | undefined;
  let why = ""; // why the connection was dropped, for the reconnect line
  /** Closes the connection: the next sample goes out on a new one. */
  const drop = (reason: string) => {
    if (link) closeQuietly(link.conn);
    link = null;
    answered = undefined;
    why = reason;
  };
  /** Something came unasked after a reply: that reply may have been a stale line. */
  const retract = (extra: string): string => {
    const last = answered;
    if (last === undefined) return "unsolicited data";
    const which = last === "ping" ? "the opening ping" : `sample ${last.value}`;
    const text = `Protocol error: unsolicited ${extra} after the reply to ${which}` +
      (last === "ping" ? "" : `: sample ${last.value} counted as lost`);
    if (last !== "ping") rtts.pop(); // its rtt was the last one counted
    if (args.json && last !== "ping") {
      console.log(JSON.stringify({
        seq: last.seq,
        sent: last.message,
        lost: true,
        why: `protocol error: unsolicited ${extra} after its reply`,
      }));
    } else if (args.json) console.error(text);
    else console.log(paint("red", text));
    return `protocol error after the reply to ${which}`;
  };
  /**
   * The pause between samples (`--interval`), during which the connection
   * must stay quiet: the reply before it stands only then.
   */
  const pause = async (): Promise<boolean> => {
    const ms = args.interval * 1000;
    const until = performance.now() + ms;
    if (link !== null) {
      const seen = await watch(link, ms);
      if (seen === "interrupted") return false;
      if (seen === "quiet") return true;
      if ("unsolicited" in seen) {
        drop(retract(seen.unsolicited));
      } else {
        drop(seen.closed);
      }
    }
    await sleep(Math.max(0, until - performance.now()), stop.signal).catch(() => {});
    return !stop.signal.aborted;
  };
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
    if ("lost" in hello) drop(`ping: ${hello.lost}`);
    else answered = "ping";

    for (let value = 102; args.count === 0 || sent < args.count; value += 2) {
      if (!await pause()) break;
      if (link === null) {
        status(`${why}: reconnecting, so that a late reply cannot pass for the next one`);
        link = await connect();
        if (link === null) break; // Ctrl+C
      }
      const message = `ping / ('${timestamp()}', ${value})`;
      sent++;
      const result = await roundTrip(link, message);
      if ("interrupted" in result) {
        sent--; // interrupted while waiting: not a lost packet
        break;
      }
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
      if ("rtt" in result) {
        rtts.push(result.rtt);
        answered = { seq: sent, value, message };
      } else {
        drop(`sample ${value} lost`);
      }
    }
    // The last reply, too, stands only if the pause after it stays quiet.
    if (!stop.signal.aborted && answered !== undefined) await pause();
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
