/**
 * tcp_proxy.ts — lesson 13: a server that is also a client. Every client it
 * accepts gets a connection of its own to the target (`--to HOST:PORT`),
 * opened at once with `Deno.connect`, and the bytes are copied both ways,
 * exactly, until both sides are done. The server at the far end sees the
 * proxy's address, not the client's.
 *
 * Each direction is one loop: `conn.read()` into a fixed 64 KiB buffer, then
 * `writeAll` of what came to the other leg, then the next read. The next read
 * waits for the write, so a side that stops reading makes the proxy stop
 * reading the other side: the kernel's buffers fill, and the sender's writes
 * wait (backpressure). Memory stays bounded whatever the speeds: one buffer
 * per direction per client, so at most `--max-conns` × 2 × 64 KiB (125 MiB
 * at the default 1000). `readable.pipeTo()` would copy too, but at the end of
 * its stream Deno closes the whole connection, and a half-close could not
 * travel.
 *
 * A half-close travels: when one side sends FIN (`read()` returns null), the
 * proxy calls `conn.closeWrite()` on the other leg and keeps copying the other
 * direction, so `printf 'a\nb\n' | nc -N` gets every reply. A reset or an
 * error on one leg closes both (Deno cannot send an RST on purpose; a close
 * with bytes unread sends one). A target that refuses or does not answer
 * within `--connect-timeout`: the client is closed with nothing sent to it,
 * and one log line says why; the next client gets a fresh try.
 *
 * Choices where the spec is silent: a client over `--max-conns` is closed
 * with nothing sent (the proxy does not know the protocol, so it cannot say
 * `ERR server busy` in it); `--idle-timeout` closes both legs when no byte
 * moved either way for that long; after every 256 KiB a copy waits for the
 * next poll (`nextPoll`), so one fast pair cannot starve the others (a poll
 * after every 64 KiB chunk cost 1.5 to 2 times the CPU per GiB relayed, in
 * bench/proxy_bench.ts); Ctrl+C closes
 * both legs of every pair at once (a byte stream has no reply to finish). The
 * task allows loopback only (`--allow-net=127.0.0.1,[::1],localhost`): to
 * relay to another host, add it to `--allow-net`; the proxy checks that
 * permission before it listens, and refuses a `--to` that resolves to itself
 * (`127.1`, `localhost`, or any address of this machine when it listens on a
 * wildcard), where each client would open another. `--trace` traces both legs, each line
 * labelled `client` or `target`.
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1],localhost' scripts/tcp_proxy.ts --to 127.0.0.1:8888
 *   deno task tcp_proxy --to 127.0.0.1:8888      (same thing)
 *
 * Try it: a server in one terminal, the proxy in a second (above), a client
 * through the proxy in a third:
 *   $ deno task socket_server_with_select
 *   $ printf 'hello\nworld\n' | nc -N 127.0.0.1 9000
 *   OK ... hello
 *   OK ... world
 * and the proxy prints:
 *   Client (127.0.0.1:PORT) connected, relayed to 127.0.0.1:8888 from 127.0.0.1:PORT
 *   Client (127.0.0.1:PORT) is offline: 12 B to the target, 26 B back
 *
 * The same with socket_client:
 *   $ deno task socket_server_with_select
 *   $ deno task socket_client --port 9000 -m hello
 *   OK ... hello
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { CliError, parseCli, parsePort, runMain, secondsToMs, usageError } from "../lib/cli.ts";
import { closeQuietly, writeAll } from "../lib/io.ts";
import { log, logError } from "../lib/log.ts";
import { nextPoll } from "../lib/fairness.ts";
import {
  acceptAgain,
  explainClientError,
  IdleClock,
  OpenClients,
  stopOnSignal,
  whyCannotListen,
} from "../lib/server.ts";
import { formatAddress } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";

const args = parseCli({
  name: "tcp_proxy",
  summary: "Relays every client to --to HOST:PORT on a connection of its own, both ways, exactly.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "address to listen on" },
    port: { kind: "port", short: "p", default: 9000, help: "TCP port, 0 for any free one" },
    to: {
      kind: "string",
      valueName: "HOST:PORT",
      help: "the target, e.g. 127.0.0.1:8888 (required)",
    },
    "connect-timeout": {
      kind: "seconds",
      default: 5,
      max: 300,
      help: "give up on a target that does not answer (0: the system's)",
    },
    "idle-timeout": {
      kind: "seconds",
      default: 300,
      help: "close both legs when no byte moved either way for this long (0: never)",
    },
    "max-conns": { kind: "integer", min: 1, max: 100_000, default: 1000, help: "clients at once" },
    quiet: { kind: "boolean", help: "do not log clients connecting and going offline" },
    trace: TRACE_FLAG,
  },
});

/** One read, one write: the most a direction holds. */
const BUFFER = 64 * 1024;
/** A copy waits for the next poll after moving this much (fairness). */
const POLL_EVERY = 256 * 1024;
const destination = parseTarget(args.to); // where every client is relayed
const to = formatAddress({ transport: "tcp", ...destination });
const clients = new OpenClients(); // what Ctrl+C closes; what --max-conns counts

/** One end of a pair: the client we accepted, or our connection to the target. */
interface Leg {
  name: "client" | "target";
  conn: Deno.TcpConn;
}

/** A failure on one leg: which one, and the error. (Declared before `runMain`, which never returns.) */
class LegFailure extends Error {
  constructor(readonly leg: Leg, readonly error: unknown) {
    super(explainClientError(error));
  }
}

await runMain(async () => {
  const allowed = Deno.permissions.querySync({ name: "net", host: to });
  if (allowed.state !== "granted") {
    throw new CliError(
      `no permission to connect to ${to}: add ${destination.hostname} to --allow-net`,
    );
  }
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: args.host, port: args.port });
  } catch (err) {
    throw await whyCannotListen(err, args.host, args.port); // names the address
  }
  if (await leadsBackHere(listener.addr)) {
    listener.close();
    throw new CliError(`--to ${to} is this proxy itself: each client would open another`, 2);
  }
  stopOnSignal("tcp_proxy", listener, clients, log); // Ctrl+C: stop, close both legs, exit 0
  console.log(`listening on ${formatAddress(listener.addr)}, relaying to ${to}`);

  while (true) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (await acceptAgain(err, log)) continue; // a client reset in the backlog: take the next
      break; // Ctrl+C closed the listener
    }
    if (clients.size >= args["max-conns"]) {
      log(`${formatAddress(conn.remoteAddr)}: closed at once, proxy full (--max-conns)`);
      conn.close();
      continue;
    }
    relay(conn); // not awaited: back to accept(); relay() catches its own errors, none escapes
  }
});

/** Connects `conn` to the target and copies both ways until both are done, or one fails. */
async function relay(conn: Deno.TcpConn): Promise<void> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn); // aborts at Ctrl+C
  const connecting = new AbortController();
  let server: Deno.TcpConn | undefined;
  const closeBoth = () => {
    connecting.abort();
    closeQuietly(conn);
    if (server) closeQuietly(server);
  };
  stop.addEventListener("abort", closeBoth, { once: true });
  const idleMs = secondsToMs(args["idle-timeout"]);
  const idle = idleMs === undefined ? undefined : new IdleClock(idleMs, closeBoth);
  const moved = { up: 0, down: 0 };
  try {
    try {
      server = await connectToTarget(connecting.signal);
    } catch (err) {
      // Nothing was sent to the client: it sees the connection close, and may try again.
      if (!stop.aborted) log(`Client (${peer}): closed, ${whyNoTarget(err)}`);
      return;
    }
    if (stop.aborted) return; // Ctrl+C came while we connected
    if (args.trace) traceConn(conn, { print: labelled("client") });
    if (args.trace) traceConn(server, { print: labelled("target") });
    conn.setNoDelay(true); // pass small writes on at once: the ends chose their own pace
    server.setNoDelay(true);
    const via = formatAddress(server.localAddr);
    if (!args.quiet) log(`Client (${peer}) connected, relayed to ${to} from ${via}`);
    idle?.restart();
    const client: Leg = { name: "client", conn };
    const target: Leg = { name: "target", conn: server };
    let failure: LegFailure | undefined; // the first leg to fail; the other only sees our close
    const ended = (err: LegFailure) => {
      if (failure === undefined && !closedByUs(err)) failure = err;
      closeBoth();
    };
    await Promise.all([
      copy(client, target, idle, (n) => moved.up += n).catch(ended),
      copy(target, client, idle, (n) => moved.down += n).catch(ended),
    ]);
    const sizes = `${moved.up} B to the target, ${moved.down} B back`;
    if (stop.aborted) return;
    if (idle?.expired) {
      log(`Client (${peer}): idle for ${idleMs! / 1000} s, closed both legs (${sizes})`);
    } else if (failure) {
      log(`Client (${peer}): ${describeFailure(failure)}; closed both legs (${sizes})`);
    } else if (!args.quiet) {
      log(`Client (${peer}) is offline: ${sizes}`);
    }
  } catch (err) {
    if (!stop.aborted) log(`Client (${peer}): ${explainClientError(err)}`); // not expected
  } finally {
    idle?.stop();
    if (server) closeQuietly(server);
    clients.close(conn);
  }
}

/**
 * Copies `from` to `to` until `from` sends FIN, then passes the FIN on
 * (`closeWrite`). The next read waits for the write: that is the backpressure.
 * Rejects with a {@linkcode LegFailure}.
 */
async function copy(
  from: Leg,
  to: Leg,
  idle: IdleClock | undefined,
  count: (n: number) => void,
): Promise<void> {
  const buffer = new Uint8Array(BUFFER);
  let sincePoll = 0;
  const on = (leg: Leg) => (err: unknown) => Promise.reject(new LegFailure(leg, err));
  while (true) {
    const n = await from.conn.read(buffer).catch(on(from));
    if (n === null) break;
    idle?.restart(); // a byte moved
    await writeAll(to.conn, buffer.subarray(0, n), idle).catch(on(to));
    count(n);
    sincePoll += n;
    if (sincePoll >= POLL_EVERY) {
      sincePoll = 0;
      await nextPoll(); // fairness: the other pairs get their turn before we read again
    }
  }
  await to.conn.closeWrite().catch(on(to)); // the half-close travels
}

/** `Deno.connect` to the target, given up after `--connect-timeout` or at Ctrl+C. */
function connectToTarget(stop: AbortSignal): Promise<Deno.TcpConn> {
  const ms = secondsToMs(args["connect-timeout"]);
  const signal = ms === undefined ? stop : AbortSignal.any([stop, AbortSignal.timeout(ms)]);
  return Deno.connect({ ...destination, signal });
}

/** Why the target could not be reached, for the log line. */
function whyNoTarget(err: unknown): string {
  const e = Deno.errors;
  const name = (err as Error)?.name;
  const why = err instanceof e.ConnectionRefused
    ? "connection refused: is the server running?"
    : name === "TimeoutError" || err instanceof e.TimedOut
    ? `no answer within ${args["connect-timeout"]} s (--connect-timeout)`
    : explainClientError(err);
  return `cannot reach the target ${to}: ${why}`;
}

/** Whether a failure is only the echo of our own close of that leg. */
function closedByUs(failure: LegFailure): boolean {
  const e = Deno.errors;
  return failure.error instanceof e.Interrupted || failure.error instanceof e.BadResource;
}

/** One leg's failure, in words: who did what. */
function describeFailure(failure: LegFailure): string {
  const { leg, error } = failure;
  if (error instanceof Deno.errors.ConnectionReset) return `the ${leg.name} reset its connection`;
  if (error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.NotConnected) {
    return `the ${leg.name} went away before taking all the bytes`;
  }
  return `the ${leg.name}'s connection failed: ${explainClientError(error)}`;
}

/** `--trace` lines of one leg, labelled `client` or `target`, to stderr without waiting. */
function labelled(leg: string): (line: string) => void {
  return (line) => logError(line.replace(/^trace /, `trace ${leg} `));
}

/** `HOST:PORT` or `[IPv6]:PORT` from `--to`, or a usage error (exit 2). */
function parseTarget(text: string | undefined): { hostname: string; port: number } {
  if (text === undefined) {
    usageError("tcp_proxy", "--to HOST:PORT is required: where to relay, e.g. 127.0.0.1:8888");
  }
  const m = text.match(/^(?:\[([^\]\s]+)\]|([^:\s\[\]]+)):(\d+)$/);
  const port = m ? parsePort(m[3]) : undefined;
  if (!m || !port) {
    usageError(
      "tcp_proxy",
      `invalid --to '${text}': expected HOST:PORT with a port from 1 to 65535, ` +
        "e.g. 127.0.0.1:8888 or [::1]:8888",
    );
  }
  return { hostname: m[1] ?? m[2], port };
}

/**
 * Whether `--to` reaches this very proxy, where each client would open another until
 * `--max-conns`: the port is ours, and an address the name resolves to (`127.1` and `localhost`
 * resolve too) is the one we listen on or, listening on a wildcard, one of this machine's. A
 * second proxy that relays back to us is not caught: `--max-conns` bounds that loop. Nothing here
 * may ask for a permission (a prompt would stop the start): a name we may not look up, or a lookup
 * slower than 1 s, is compared as written.
 */
async function leadsBackHere(listening: Deno.NetAddr): Promise<boolean> {
  if (destination.port !== listening.port) return false;
  const { hostname } = destination;
  const literal = [{ address: hostname, family: hostname.includes(":") ? 6 : 4 }];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const found = mayUse(hostname)
    ? await Promise.race([
      lookup(hostname, { all: true }).catch(() => literal),
      new Promise<typeof literal>((resolve) => timer = setTimeout(() => resolve(literal), 1000)),
    ])
    : literal;
  clearTimeout(timer);
  const wildcard = listening.hostname === "0.0.0.0" || listening.hostname === "::";
  const loopbackOf: Record<string, string> = { "0.0.0.0": "127.0.0.1", "::": "::1" };
  return found.some(({ address, family }) => {
    const plain = address.replace(/^::ffff:(?=\d+\.)/i, ""); // ::ffff:127.0.0.1 is 127.0.0.1
    const reached = loopbackOf[plain] ?? plain; // connecting to a wildcard reaches loopback
    if (!wildcard) return reached === listening.hostname;
    const v4 = family === 4 || plain !== address;
    return (v4 || listening.hostname === "::") && mayUse(reached) && canBind(reached);
  });
}

/** Whether `host` is granted already (asking would prompt). */
function mayUse(host: string): boolean {
  const name = host.includes(":") ? `[${host}]` : host;
  return Deno.permissions.querySync({ name: "net", host: name }).state === "granted";
}

/** Whether `address` is one of this machine's: we may bind it. */
function canBind(address: string): boolean {
  try {
    Deno.listen({ hostname: address, port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}
