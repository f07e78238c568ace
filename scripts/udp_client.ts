/**
 * udp_client.ts — `ping` over UDP: sends `ping 1`, `ping 2`, ... as datagrams,
 * matches each `pong <seq>` to its ping, and ends with a `ping`-style summary.
 *
 * There is no connection: the client opens a socket of its own on a free port
 * (`Deno.listenDatagram` with port 0, on loopback for a loopback server),
 * `send`s each ping to the server's address and `receive`s whatever comes to
 * its port, from anyone. Nothing tells it that a datagram was lost, or that no
 * server is there at all (on Linux an unconnected socket is not told of the
 * ICMP "port unreachable"), so every wait is bounded: a ping gets `--timeout`
 * for its reply, and after the last ping the client waits at most that long.
 * Replies may come late, twice, or in another order, so each carries its
 * ping's sequence number and is matched by it, never by its place in line:
 *
 * - received: the first reply to a ping, within `--timeout` of its send; its
 *   round trip counts. One that comes after a reply to a later ping is
 *   received too, and counted `out of order`.
 * - late: the first reply to a ping, after `--timeout` (the client had said
 *   `no reply`): a loss, as for `ping -W`, counted `late`, no round trip.
 * - duplicate: another reply to a ping that had one: counted, nothing more.
 * - ignored: a reply to a ping never sent, anything not `pong <seq>`, and any
 *   datagram from another port than the server's (anyone can send to our
 *   port): a line with the bytes escaped, counted `ignored`. The port, not the
 *   address: a server bound to a wildcard (`0.0.0.0`) answers from whichever
 *   of its addresses the route picks, not always the one we pinged.
 *
 * The summary: `N sent, M received, L% loss` (L from N and M), the other
 * counts, and the round trips' min/avg/max/p99. Ctrl+C ends the run early with
 * the summary; `--count 0` pings until then. Exit 1 when no ping got its reply
 * in time (100% loss), as `ping` does; 0 otherwise.
 *
 * Run (start scripts/udp_server.ts first):
 *   deno run --unstable-net --allow-net='127.0.0.1,[::1],localhost' scripts/udp_client.ts --count 3 --interval 0.2
 *   deno task udp_client --count 3 --interval 0.2     (same thing)
 * Expected output (times vary):
 *   pong 1 from 127.0.0.1:8892: time=0.412 ms
 *   pong 2 from 127.0.0.1:8892: time=0.205 ms
 *   pong 3 from 127.0.0.1:8892: time=0.198 ms
 *   --- 127.0.0.1:8892 udp ping statistics ---
 *   3 sent, 3 received, 0% loss
 *   0 late, 0 duplicate, 0 out of order, 0 ignored
 *   rtt min/avg/max/p99 = 0.198/0.272/0.412/0.412 ms
 *
 * Start the server with `--drop 0.3 --delay 500` to see losses, late and
 * out-of-order replies. Or play the server by hand with nc: it prints each
 * ping; type `pong 1` and so on back (nc sends the newline too, and the client
 * takes `pong 1\n` as well):
 *   $ nc -u -l 127.0.0.1 8892
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { parseCli, runMain, secondsToMs } from "../lib/cli.ts";
import { flushLogs, log, logError } from "../lib/log.ts";
import { sleep } from "../lib/retry.ts";
import { onStopSignal } from "../lib/signals.ts";
import { formatAddress, LOG_PREVIEW, paint, showBytes } from "../lib/text.ts";
import { TRACE_FLAG } from "../lib/trace.ts";
import { traceDatagram } from "./udp/trace_datagram.ts";
import { lossPercent, summarize } from "./sensor_client/stats.ts";

const args = parseCli({
  name: "udp_client",
  summary: "Pings a UDP server with 'ping <seq>' datagrams, matches each 'pong <seq>', prints a " +
    "summary. Needs unstable net (deno.json enables it; elsewhere: deno run --unstable-net).",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to ping" },
    port: { kind: "port", short: "p", default: 8892, help: "server's UDP port" },
    count: { kind: "integer", max: 1e6, default: 5, help: "pings to send (0: until Ctrl+C)" },
    interval: { kind: "seconds", max: 3600, default: 1, help: "seconds between pings" },
    timeout: {
      kind: "seconds",
      min: 0.001,
      max: 3600,
      default: 2,
      help:
        "a reply later than this after its ping is late, and lost; the wait after the last ping",
    },
    trace: { ...TRACE_FLAG, help: "print every datagram sent and received, escaped, to stderr" },
  },
});

const timeoutMs = secondsToMs(args.timeout)!; // (at least 1: --timeout has a minimum)
const REPLY = /^pong (\d{1,16})\r?\n?$/; // a newline allowed, for a server played with nc
const DECODER = new TextDecoder();
const ms = (x: number) => x.toFixed(3);

/** One ping sent: when, how many replies came for it, and whether its wait ran out. */
type Ping = {
  sentAt: number;
  replies: number;
  expired: boolean;
  timer?: ReturnType<typeof setTimeout>;
};
const pings: Ping[] = []; // pings[seq - 1]
const counts = { received: 0, late: 0, duplicate: 0, outOfOrder: 0, ignored: 0 };
const rtts: number[] = [];
let highestAnswered = 0; // the highest seq answered in time: a lower one after it is out of order
let unsettled = 0; // pings sent that have neither a reply in time nor an expired wait
/** Called when a ping is settled (answered in time, or expired): the run may be over. */
let onSettled = () => {};

/** Ctrl+C or SIGTERM: the run stops where it is and prints its summary. */
const stop = new AbortController();
onStopSignal(() => stop.abort(), { name: "udp_client" }); // a second one exits at once

/** What one datagram that came in is: a reply matched to its ping, or ignored, with a line. */
function onDatagram(data: Uint8Array, from: Deno.Addr): void {
  const at = performance.now();
  if (args.trace) traceDatagram("received", data, from, logError);
  const peer = formatAddress(from);
  const seq = Number(REPLY.exec(DECODER.decode(data))?.[1] ?? NaN);
  const ping = pings[seq - 1];
  const shown = `'${showBytes(data, LOG_PREVIEW)}'`; // escaped: a peer's bytes never reach us raw
  let why = "";
  // The port, not the address: a server bound to 0.0.0.0 may answer from another of its addresses.
  if ((from as Deno.NetAddr).port !== args.port) why = `from ${peer}, not the server's port`;
  else if (Number.isNaN(seq)) why = "not 'pong <seq>'";
  else if (!ping) why = `no ping ${seq} was sent`;
  if (why) {
    counts.ignored++;
    log(paint("yellow", `Ignored ${shown}: ${why}`));
    return;
  }
  const time = `time=${ms(at - ping.sentAt)} ms`;
  ping.replies++;
  if (ping.replies > 1) {
    counts.duplicate++;
    log(paint("yellow", `pong ${seq} from ${peer}: ${time} (duplicate: counted once)`));
  } else if (ping.expired) {
    counts.late++;
    log(paint("yellow", `pong ${seq} from ${peer}: ${time} (late: after --timeout, lost)`));
  } else {
    clearTimeout(ping.timer);
    unsettled--;
    counts.received++;
    rtts.push(at - ping.sentAt);
    const order = seq < highestAnswered
      ? ` (out of order: pong ${highestAnswered} came first)`
      : "";
    if (order) counts.outOfOrder++;
    highestAnswered = Math.max(highestAnswered, seq);
    log(`pong ${seq} from ${peer}: ${time}${order}`);
    onSettled();
  }
}

/** Reads every datagram that comes until the socket is closed. */
async function receiveAll(socket: Deno.DatagramConn, server: string): Promise<void> {
  const buffer = new Uint8Array(65_536); // bigger than any datagram: none is cut
  while (true) {
    try {
      const [data, from] = await socket.receive(buffer);
      onDatagram(data, from);
    } catch (err) {
      if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) return;
      // Some systems (Windows; a connected socket on Linux) report an ICMP error here.
      const refused = err instanceof Deno.errors.ConnectionRefused ||
        err instanceof Deno.errors.ConnectionReset;
      if (!refused) {
        logError(`receive failed: ${(err as Error).message}`);
        return;
      }
      log(paint("red", `${server} says no server listens there (ICMP port unreachable)`));
    }
  }
}

/** Resolves once every ping sent has its reply or ran out of time, or at Ctrl+C. */
function allSettled(): Promise<void> {
  return new Promise((resolve) => {
    onSettled = () => unsettled === 0 && resolve();
    stop.signal.addEventListener("abort", () => resolve(), { once: true });
    onSettled();
  });
}

await runMain(async () => {
  if (typeof Deno.listenDatagram !== "function") {
    throw new Error("Deno.listenDatagram is unstable: run with --unstable-net");
  }
  // The system resolver, as gethostbyname: `localhost` works offline, from the hosts file.
  const { address, family } = await lookup(args.host).catch((err) => {
    const why = err.code === "EPERM"
      ? `no permission: run with --allow-net=${args.host}`
      : `${err.code}: check the name, or the network`;
    throw new Error(`cannot resolve host ${args.host} (${why})`);
  });
  const target: Deno.NetAddr = { transport: "udp", hostname: address, port: args.port };
  const server = formatAddress(target);
  // Our own socket, on a free port of the same family; on loopback for a loopback server.
  const loopback = /^(127\.|::1$)/.test(address);
  const hostname = family === 6 ? (loopback ? "::1" : "::") : (loopback ? "127.0.0.1" : "0.0.0.0");
  const socket = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
  const receiving = receiveAll(socket, server);
  try {
    for (let seq = 1; args.count === 0 || seq <= args.count; seq++) {
      // (--interval 0: back to back; a timer of 0 would still wait a few ms each)
      if (seq > 1 && args.interval > 0) await sleep(args.interval * 1000, stop.signal);
      stop.signal.throwIfAborted();
      const bytes = new TextEncoder().encode(`ping ${seq}`);
      const ping: Ping = { sentAt: performance.now(), replies: 0, expired: false };
      pings.push(ping);
      unsettled++;
      ping.timer = setTimeout(() => { // set first: the reply may come before send() returns
        ping.expired = true;
        unsettled--;
        log(paint("red", `no reply to ping ${seq} within ${args.timeout} s`));
        onSettled();
      }, timeoutMs);
      if (args.trace) traceDatagram("sent", bytes, target, logError);
      await socket.send(bytes, target); // no connection: each datagram names where it goes
    }
    await allSettled();
  } catch (err) {
    if (!stop.signal.aborted) throw err; // Ctrl+C ends the run: not an error
  } finally {
    for (const ping of pings) clearTimeout(ping.timer);
    socket.close(); // the receive loop ends
    await receiving;
  }
  printSummary(server);
});
await flushLogs();
Deno.exit(pings.length > 0 && counts.received === 0 ? 1 : 0); // (the signal listeners stay)

function printSummary(server: string): void {
  const { received, late, duplicate, outOfOrder, ignored } = counts;
  log(`--- ${server} udp ping statistics ---`);
  log(`${pings.length} sent, ${received} received, ${lossPercent(pings.length, received)}% loss`);
  log(`${late} late, ${duplicate} duplicate, ${outOfOrder} out of order, ${ignored} ignored`);
  const rtt = summarize(rtts);
  if (rtt) log(`rtt min/avg/max/p99 = ${Object.values(rtt).map(ms).join("/")} ms`);
}
