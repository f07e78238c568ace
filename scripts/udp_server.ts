/**
 * udp_server.ts — the sensor lesson over UDP: every datagram `ping <seq>` is
 * answered with a datagram `pong <seq>`, sent back to the address it came from.
 *
 * A datagram keeps its boundaries: one `send` on the client is one `receive`
 * here, whole, so there is no framing to do (no newline, no length). But there
 * is no connection either: no `accept`, no peer that comes and goes; one
 * socket (`Deno.listenDatagram`) takes every client's datagrams, and each
 * `receive` says who sent it. Nothing is delivered for sure, or in order: on a
 * real network a datagram may be lost, duplicated, or overtaken. Loopback
 * loses nothing, so `--drop P` throws away that fraction of the requests at
 * random and `--delay MS` holds each reply a random time up to MS (each on its
 * own timer, so replies overtake each other), and the client has to cope.
 *
 * Choices where the contract is silent: a request is exactly `ping`, a space,
 * and 1 to 16 decimal digits; a trailing newline (what `nc` sends for a typed
 * line) is allowed, and the reply has none. Anything else, and any datagram
 * over 1,472 bytes (the most that fits one Ethernet frame over IPv4: 1,500
 * less 20 of IP header and 8 of UDP), is ignored with a log line, its bytes
 * escaped. The receive buffer is 64 KiB, bigger than any datagram, because a
 * datagram longer than the buffer is cut without a word. Ctrl+C sends the
 * replies `--delay` still holds at once (they are owed), then closes the
 * socket, which ends the `receive` loop. `Deno.listenDatagram` is still
 * unstable in Deno 2: the project's deno.json enables it, and a copy run
 * elsewhere needs `--unstable-net`, as below.
 *
 * Run:
 *   deno run --unstable-net --allow-net='127.0.0.1,[::1]' scripts/udp_server.ts
 *   deno task udp_server            (same thing)
 *
 * Try it from a second terminal (`-w1`: nc waits a second for the reply;
 * `echo`: the reply has no newline):
 *   $ printf 'ping 1' | nc -u -w1 127.0.0.1 8892; echo
 *   pong 1
 * and the server prints:
 *   Received: ping 1 (from 127.0.0.1:PORT)
 *
 * Or type `ping 1`, `ping 2`, ... into nc by hand (Ctrl+C ends it); or start
 * the server with `--drop 0.3 --delay 500` and run `deno task udp_client`.
 *   $ nc -u 127.0.0.1 8892
 *
 * @module
 */

import { parseCli, runMain } from "../lib/cli.ts";
import { log, logError } from "../lib/log.ts";
import { listenErrorText } from "../lib/server.ts";
import { exitSoon, onStopSignal } from "../lib/signals.ts";
import { formatAddress, LOG_PREVIEW, paint, showBytes } from "../lib/text.ts";
import { TRACE_FLAG } from "../lib/trace.ts";
import { traceDatagram } from "./udp/trace_datagram.ts";

const args = parseCli({
  name: "udp_server",
  summary: "Answers every datagram 'ping <seq>' with 'pong <seq>'; can drop and delay like a " +
    "real network. Needs unstable net (deno.json enables it; elsewhere: deno run --unstable-net).",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "address to listen on (0.0.0.0 or ::)" },
    port: { kind: "port", short: "p", default: 8892, help: "UDP port, 0 for any free one" },
    drop: {
      kind: "number",
      max: 1,
      default: 0,
      valueName: "P",
      help: "drop this fraction of the requests at random, 0 to 1",
    },
    delay: {
      kind: "integer",
      max: 10_000,
      default: 0,
      valueName: "MS",
      help: "hold each reply a random time up to MS milliseconds, each on its own",
    },
    quiet: { kind: "boolean", help: "log only what is ignored, not every ping" },
    trace: { ...TRACE_FLAG, help: "print every datagram sent and received, escaped, to stderr" },
  },
});

/** The largest request taken: one Ethernet frame (1,500 bytes) less the IPv4 and UDP headers. */
const MAX_DATAGRAM = 1472;
/** `ping <seq>`, and a newline if `nc` added one. */
const REQUEST = /^ping (\d{1,16})\r?\n?$/;
/** Replies held by `--delay` at once, at most; more is a flood, and is dropped. */
const MAX_HELD = 10_000;
const DECODER = new TextDecoder();

await runMain(async () => {
  if (typeof Deno.listenDatagram !== "function") {
    throw new Error("Deno.listenDatagram is unstable: run with --unstable-net");
  }
  let socket: Deno.DatagramConn;
  try {
    socket = Deno.listenDatagram({ transport: "udp", hostname: args.host, port: args.port });
  } catch (err) {
    throw new Error(listenErrorText(err, args.host, args.port), { cause: err });
  }
  /** Replies `--delay` holds: each one's timer, and how to send it now. */
  const held = new Map<ReturnType<typeof setTimeout>, () => Promise<void>>();
  let stopping = false;

  /** Sends `pong <seq>` to `to`; a failure is logged, never thrown (nobody awaits it). */
  const reply = async (seq: string, to: Deno.Addr) => {
    const bytes = new TextEncoder().encode(`pong ${seq}`);
    if (args.trace) traceDatagram("sent", bytes, to, logError);
    await socket.send(bytes, to).catch((err) => {
      log(`${formatAddress(to)}: could not send pong ${seq}: ${(err as Error).message}`);
    });
  };

  onStopSignal(async () => {
    const exitBy = performance.now() + 1800; // within 2 s of the signal
    stopping = true;
    const owed = [...held].map(([timer, send]) => (clearTimeout(timer), send()));
    await Promise.all(owed);
    socket.close(); // the receive() below fails: the loop ends
    const early = owed.length
      ? `, after sending the ${owed.length} held ${owed.length === 1 ? "reply" : "replies"} now`
      : "";
    log(paint("dim", `udp_server: shut down${early}`));
    await exitSoon(0, exitBy - performance.now());
  }, { name: "udp_server", say: log });
  console.log(`listening on ${formatAddress(socket.addr)} (UDP)`);

  const buffer = new Uint8Array(65_536); // bigger than any datagram: an over-size one is seen whole
  while (!stopping) {
    let data: Uint8Array, from: Deno.Addr;
    try {
      [data, from] = await socket.receive(buffer);
    } catch (err) {
      if (stopping) break; // Ctrl+C closed the socket
      log(`receive failed: ${(err as Error).message}`); // (an ICMP error, on some systems)
      continue;
    }
    const peer = formatAddress(from);
    if (args.trace) traceDatagram("received", data, from, logError);
    if (data.length > MAX_DATAGRAM) {
      log(`Ignored: a ${data.length}-byte datagram, over ${MAX_DATAGRAM} (from ${peer})`);
      continue;
    }
    const seq = REQUEST.exec(DECODER.decode(data))?.[1];
    if (seq === undefined) {
      // Escaped: a peer's bytes never reach the log raw.
      log(`Ignored: '${showBytes(data, LOG_PREVIEW)}', not 'ping <seq>' (from ${peer})`);
      continue;
    }
    if (!args.quiet) log(`Received: ping ${seq} (from ${peer})`);
    if (Math.random() < args.drop) {
      if (!args.quiet) log(`Dropped: ping ${seq}, as a lossy network would (--drop)`);
      continue;
    }
    if (args.delay === 0) {
      reply(seq, from); // not awaited: the next datagram is read meanwhile
    } else if (held.size >= MAX_HELD) {
      log(`Dropped: ping ${seq}, ${MAX_HELD} replies are held already (--delay)`);
    } else {
      const timer = setTimeout(() => {
        held.delete(timer);
        reply(seq, from);
      }, Math.random() * args.delay);
      held.set(timer, () => reply(seq, from));
    }
  }
});
