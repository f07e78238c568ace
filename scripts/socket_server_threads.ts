/**
 * socket_server_threads.ts — many clients at once, served by a pool of
 * threads (Web Workers), each line answered `OK ... <line>`.
 *
 * The seed (`socket_server_threads.py`) accepted in the main thread and
 * started a thread per client, handing it the socket. Deno cannot do that: a
 * `Deno.Conn` is a handle owned by the thread that opened it and cannot be
 * posted to a Worker, and relaying every byte through the main thread would
 * make it the bottleneck. So each worker opens its *own* listener on the same
 * port with `reusePort` (SO_REUSEPORT), the kernel spreads new connections
 * across the workers, and each worker serves its clients exactly as
 * socket_server_with_select.ts does, on its own thread and CPU core.
 *
 * What a worker shares with the main thread: copies of the messages they post
 * (its settings, its reports), and memory made for sharing, a
 * SharedArrayBuffer. That is how `--max-conns` caps the whole pool: one
 * counter in shared memory that every worker updates with `Atomics`, so two
 * workers can never both take the last place. What it cannot share: a socket.
 *
 * The main thread only supervises. It starts `--workers` workers (default:
 * one per CPU), replaces one that crashes, and on Ctrl+C tells them all to
 * finish their replies and stop. `--crash-after N` shows a replacement: a
 * worker closes its listener as it accepts its Nth client (the kernel sends
 * later ones to the others; any already queued on it are reset), answers its
 * clients to the end, then throws. While no worker listens (one worker, or
 * all at their last client) new clients are refused, and can retry. Workers
 * are not recycled: closing a reusePort listener drops the connections queued
 * on it, so no hand-over from an old worker to a new one can be lossless.
 *
 * `reusePort` needs Linux and unstable net (`"unstable": ["net"]` in this
 * project's deno.json, or `--unstable-net`); without them the pool serves with
 * one worker and says so. This file plays both roles (its last lines pick
 * one): the supervisor when run, a server when loaded as a Worker
 * (`new Worker(import.meta.url)` reads it from disk, hence `--allow-read` for
 * this file and lib/).
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' --allow-read=scripts/socket_server_threads.ts,lib scripts/socket_server_threads.ts
 *   deno task socket_server_threads            (same thing)
 *
 * Try it from a second terminal:
 *   $ printf 'hello\n' | nc -N 127.0.0.1 8888
 *   OK ... hello
 * and the server prints which worker N took the client:
 *   [worker N] Client (127.0.0.1:PORT) connected
 *   [worker N] Client (127.0.0.1:PORT) is offline
 *
 * Or talk to it by hand from several terminals at once (type a line, get it back):
 *   $ nc 127.0.0.1 8888
 *
 * @module
 */

import { CliError, lineServerFlags, parseCli, runMain } from "../lib/cli.ts";
import { serveLines } from "../lib/lines.ts";
import {
  closeQuietly,
  type ConnectionCap,
  formatAddress,
  lineLimits,
  listen,
  onStopSignal,
  TcpServer,
} from "../lib/server.ts";

/** What the supervisor tells a worker when it starts it. */
interface WorkerSettings {
  id: number;
  slot: number; // its place in the pool, which its replacement takes over
  port: number;
  reusePort: boolean;
  counts: SharedArrayBuffer; // see sharedCap()
  flags: {
    host: string;
    "max-conns": number;
    "max-line": number;
    "idle-timeout": number;
    quiet: boolean;
    "crash-after": number;
  };
}

/** What a worker tells the supervisor. */
type WorkerReport =
  | { type: "listening"; port: number }
  | { type: "failed"; message: string } // could not listen
  | { type: "crashed"; message: string } // an uncaught error: this worker is ending
  | { type: "stopped" };

// ------------------------------------------------------------------ the worker

function beWorker() {
  const scope = globalThis as unknown as {
    onmessage: (e: MessageEvent<WorkerSettings | "stop">) => void;
    postMessage(message: WorkerReport): void;
    close(): void;
  };
  const report = (message: WorkerReport) => scope.postMessage(message);
  // An uncaught error ends this worker: tell the supervisor in one line (no
  // stack trace on the terminal) and exit; the supervisor starts a new one.
  const crash = (message: string) => {
    report({ type: "crashed", message });
    scope.close();
  };
  addEventListener("error", (e) => {
    e.preventDefault();
    crash(e.error?.message ?? e.message);
  });
  addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    crash(String(e.reason?.message ?? e.reason));
  });

  let server: TcpServer | undefined;
  scope.onmessage = async ({ data }) => {
    if (data === "stop") {
      await server?.shutdown();
      return report({ type: "stopped" });
    }
    const { id, flags } = data;
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: flags.host, port: data.port, reusePort: data.reusePort });
    } catch (err) {
      return report({ type: "failed", message: (err as Error).message });
    }
    const log = (line: string) => console.log(`[worker ${id}] ${line}`);
    server = new TcpServer(listener, {
      name: `worker ${id}`,
      maxConns: sharedCap(new Int32Array(data.counts), data.slot, flags["max-conns"]),
      handleSignals: false, // the supervisor handles Ctrl+C and tells us
      log,
    });
    report({ type: "listening", port: listener.addr.port });
    await serve(server, flags, flags.quiet ? () => {} : log);
  };
}

const OK = new TextEncoder().encode("OK ... ");
const NEWLINE = new TextEncoder().encode("\n");

/** Serves clients until shutdown or, with `--crash-after N`, crashes after its Nth. */
async function serve(server: TcpServer, flags: WorkerSettings["flags"], log: (l: string) => void) {
  const inFlight = new Set<Promise<void>>();
  let served = 0;
  let crashing = false;
  for await (const conn of server.accept()) {
    // Its last client (--crash-after): close the listener now, so that no one queues on it.
    crashing = ++served === flags["crash-after"];
    if (crashing) closeQuietly(server.listener);
    conn.setNoDelay(true);
    const done = server.handle(conn, async (conn, peer) => {
      log(`Client (${peer}) connected`);
      await serveLines(conn, (line) => [OK, line, NEWLINE], lineLimits(flags, server.signal));
      log(`Client (${peer}) is offline`);
    });
    inFlight.add(done);
    done.then(() => inFlight.delete(done));
    if (crashing) break;
  }
  if (!crashing) return; // shut down
  while (inFlight.size > 0) await Promise.all(inFlight);
  // A real uncaught error (an unhandled rejection), once every reply was sent.
  if (!server.signal.aborted) throw new Error(`deliberate crash after ${served} client(s)`);
}

/**
 * The pool's `--max-conns`: counts[0] is the number of clients the whole pool
 * serves, counts[slot] the share of one worker, which the supervisor gives
 * back if that worker dies without giving back its places itself.
 * `Atomics.add` returns the value before the addition, so taking a place is a
 * single indivisible step: two workers cannot both see the last one free.
 */
function sharedCap(counts: Int32Array, slot: number, max: number): ConnectionCap {
  return {
    tryTake() {
      if (Atomics.add(counts, 0, 1) < max) {
        Atomics.add(counts, slot, 1);
        return true;
      }
      Atomics.sub(counts, 0, 1); // over the cap: undo
      return false;
    },
    give() {
      Atomics.sub(counts, slot, 1);
      Atomics.sub(counts, 0, 1);
    },
  };
}

// -------------------------------------------------------------- the supervisor

async function supervise() {
  const args = parseCli({
    name: "socket_server_threads",
    summary:
      "Many clients at once on a pool of worker threads; answers every line with 'OK ... <line>'.",
    options: {
      ...lineServerFlags(8888, 300),
      workers: {
        kind: "integer",
        min: 1,
        max: MAX_WORKERS,
        default: Math.min(navigator.hardwareConcurrency, MAX_WORKERS),
        help: "worker threads, one per CPU unless given",
      },
      "max-conns": {
        kind: "integer",
        min: 1,
        max: 100_000,
        default: 10_000,
        help: "clients served at once by the whole pool",
      },
      "crash-after": {
        kind: "integer",
        min: 0,
        default: 0,
        help: "demonstration: a worker crashes after serving N clients (0: never)",
      },
      quiet: { kind: "boolean", help: "do not log clients connecting and going offline" },
    },
  });

  await runMain(async () => {
    const why = reusePortMissing();
    if (why && args.workers > 1) console.log(`${why}: serving with 1 worker`);
    const count = why ? 1 : args.workers;
    const counts = new SharedArrayBuffer(4 * (count + 1)); // see sharedCap()
    const pool = new Map<number, Worker>(); // slot (1..count) -> its worker
    // A worker loads this file from disk: without read access it would die
    // with a two-line "Uncaught (in worker)" error.
    const self = new URL(import.meta.url);
    if (
      self.protocol === "file:" &&
      Deno.permissions.querySync({ name: "read", path: self }).state !== "granted"
    ) {
      throw new CliError(
        "the workers load this file and lib/ from disk: run with " +
          "--allow-read=scripts/socket_server_threads.ts,lib (deno task socket_server_threads does)",
      );
    }
    // A reusePort listener would silently join another server already on this
    // port, and the kernel would split the clients between the two. A plain
    // listener fails with "port in use" instead; it also picks the port for
    // --port 0. The workers bind that port once it is free again.
    const probe = listen(args.host, args.port);
    const port = probe.addr.port;
    probe.close();
    let nextId = 1;
    let stopping = false;

    /** Starts a worker in `slot`; resolves with the port it bound once it listens. */
    function startWorker(slot: number): Promise<number> {
      const id = nextId++;
      const worker = new Worker(import.meta.url, { type: "module", name: `worker ${id}` });
      pool.set(slot, worker);
      let listening = false;
      return new Promise((resolve, reject) => {
        const crashed = (message: string) => {
          worker.terminate();
          reject(new Error(message));
          if (pool.get(slot) !== worker) return; // already handled
          pool.delete(slot);
          // Give back the places its clients held, so the pool's cap stays true.
          const cells = new Int32Array(counts);
          Atomics.sub(cells, 0, Atomics.exchange(cells, slot, 0));
          // Replace a worker that was serving; one that never listened would fail again.
          if (!listening || stopping) return;
          console.log(`worker ${id} crashed (${message}); starting worker ${nextId} in its place`);
          startWorker(slot).catch((err) => console.log(`could not replace worker ${id}: ${err}`));
        };
        worker.onmessage = ({ data: m }: MessageEvent<WorkerReport>) => {
          if (m.type === "listening") {
            listening = true;
            resolve(m.port);
          } else if (m.type === "failed") {
            worker.terminate();
            if (pool.get(slot) === worker) pool.delete(slot);
            reject(listenError(m.message, args.host, port));
          } else if (m.type === "crashed") {
            crashed(m.message);
          }
        };
        // A crash the worker could not report itself; contain it, or it ends the server.
        worker.onerror = (e: ErrorEvent) => {
          e.preventDefault();
          crashed(e.message);
        };
        worker.postMessage(
          { id, slot, port, reusePort: !why, counts, flags: args } satisfies WorkerSettings,
        );
      });
    }

    try {
      await Promise.all(Array.from({ length: count }, (_, i) => startWorker(i + 1)));
    } catch (err) {
      for (const w of pool.values()) w.terminate();
      throw err;
    }

    /** Ctrl+C or SIGTERM: each worker finishes its replies (1.5 s at most) and stops. */
    async function stop() {
      stopping = true;
      const workers = [...pool.values()];
      const stopped = workers.map((w) =>
        new Promise<void>((resolve) => {
          w.addEventListener("message", (e) => e.data?.type === "stopped" && resolve());
          w.postMessage("stop");
        })
      );
      await Promise.race([Promise.all(stopped), new Promise((r) => setTimeout(r, 1800))]);
      for (const w of workers) w.terminate();
      console.log(`socket_server_threads: shut down`);
      Deno.exit(0);
    }
    // Ready means ready for Ctrl+C too: the handlers go in before the line is printed.
    onStopSignal(stop);
    console.log(`${count} worker thread(s) sharing the port`);
    console.log(`listening on ${formatAddress({ transport: "tcp", hostname: args.host, port })}`);
  });
}

/** More would only add threads competing for the same cores. */
const MAX_WORKERS = 32;

/** Why the port cannot be shared between workers here, or "" when it can. */
function reusePortMissing(): string {
  if (Deno.build.os !== "linux") return "reusePort spreads clients over threads only on Linux";
  // Without unstable net, the unstable network functions are missing altogether.
  if (typeof Reflect.get(Deno, "listenDatagram") !== "function") {
    return `reusePort needs unstable net (--unstable-net or "unstable": ["net"] in deno.json)`;
  }
  return "";
}

function listenError(message: string, host: string, port: number): Error {
  const where = formatAddress({ transport: "tcp", hostname: host, port });
  return new Error(
    /in use/i.test(message)
      ? `port ${port} is already in use on ${host}: stop the other server, or pick another --port (--port 0 takes a free one)`
      : /requires net access|NotCapable/i.test(message)
      ? `no permission to listen on ${where}: run with --allow-net=${host}`
      : `cannot listen on ${where}: ${message}`,
  );
}

// ------------------------------------------------------------------ which role

// WorkerGlobalScope exists only inside a worker: that is how this file knows its role.
if ("WorkerGlobalScope" in globalThis) beWorker();
else await supervise();
