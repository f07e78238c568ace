/**
 * socket_server_threads.ts — many clients at once, served by a pool of
 * threads (Web Workers), each line answered `OK ... <line>`. This file is the
 * supervisor; each worker is scripts/workers/pool_worker.ts.
 *
 * The seed (`socket_server_threads.py`) accepted in the main thread and
 * handed each client's socket to a thread of its own. Deno cannot hand a
 * socket over: a `Deno.Conn` is a handle into the runtime of the thread that
 * opened it, and threads share no objects, only copies of the messages they
 * post, which cannot carry a handle; relaying every byte through the main
 * thread would make it the bottleneck. So each worker opens its *own*
 * listener on the same port with `reusePort` (SO_REUSEPORT), the kernel
 * spreads new connections across the listeners, and each worker serves its
 * clients as socket_server_with_select.ts does, on its own thread and core.
 * (`reusePort` needs Linux and unstable net: `"unstable": ["net"]` in this
 * project's deno.json, or `--unstable-net`. Without them, one worker serves.)
 *
 * The supervisor, this main thread, never touches a client: it checks that
 * the port is free, starts `--workers` workers (default: one per CPU), each
 * `new Worker(...)` of the worker file read from disk (hence `--allow-read`
 * for it and lib/), replaces one that crashes, and on Ctrl+C tells them all
 * to finish their replies and stop. `--max-conns` caps the whole pool with
 * one counter in shared memory (see the worker file for why).
 *
 * `--crash-after N` shows a replacement: a worker closes its listener as it
 * accepts its Nth client (the kernel sends later ones to the others; any
 * already queued on it are reset), answers its clients to the end, then
 * throws. While no worker listens, new clients are refused and can retry.
 * Workers are not recycled: closing a reusePort listener drops the
 * connections queued on it, so no hand-over can be lossless.
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' --allow-read=scripts,lib scripts/socket_server_threads.ts
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

import { CliError, parseCli, runMain } from "../lib/cli.ts";
import { lineServerFlags } from "../lib/many_clients.ts";
import { whyCannotListen } from "../lib/server.ts";
import { onStopSignal } from "../lib/signals.ts";
import { formatAddress, plural } from "../lib/text.ts";
import type { WorkerReport, WorkerSettings } from "./workers/pool_worker.ts";
import { flushLogs, log } from "../lib/log.ts";

/** More would only add threads competing for the same cores. */
const MAX_WORKERS = 32;
const WORKER_FILE = new URL("./workers/pool_worker.ts", import.meta.url);

/** The flags, parsed by the supervisor; each worker gets a copy. */
function parseFlags() {
  return parseCli({
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
}
type Flags = ReturnType<typeof parseFlags>;

/**
 * A worker died: give back the places its clients held, so the cap stays
 * true (counts[0] is the pool's total, counts[slot] one worker's share).
 */
function freeShare(counts: SharedArrayBuffer, slot: number): void {
  const cells = new Int32Array(counts);
  Atomics.sub(cells, 0, Atomics.exchange(cells, slot, 0));
}

async function supervise(): Promise<void> {
  const flags = parseFlags();
  await runMain(async () => {
    const { port, reusePort, count } = await preflight(flags);
    const counts = new SharedArrayBuffer(4 * (count + 1)); // see sharedCap()
    const pool = new Map<number, Worker>(); // slot -> its worker
    let nextId = 1;
    let stopping = false;

    /** Starts a worker in `slot`; resolves once it listens, rejects if it ends before. */
    function startWorker(slot: number): Promise<void> {
      const id = nextId++;
      const worker = new Worker(WORKER_FILE, { type: "module", name: `worker ${id}` });
      pool.set(slot, worker);
      return new Promise((resolve, reject) => {
        let listening = false;
        const ended = (message: string) => {
          worker.terminate();
          if (pool.get(slot) !== worker) return; // already handled
          pool.delete(slot);
          freeShare(counts, slot);
          // One that never listened would fail again: that is the server's error.
          if (!listening) return reject(new Error(message));
          if (stopping) return;
          log(`worker ${id} crashed (${message}); starting worker ${nextId} in its place`);
          startWorker(slot).catch((err) => log(`could not replace worker ${id}: ${err.message}`));
        };
        worker.onmessage = ({ data }: MessageEvent<WorkerReport>) => {
          if (data === "listening") {
            listening = true;
            resolve();
          } else if (typeof data === "object") ended(data.crashed);
        };
        // A crash the worker could not report itself; contain it, or it ends the server.
        worker.onerror = (e: ErrorEvent) => {
          e.preventDefault();
          ended(e.message);
        };
        worker.postMessage({ id, slot, port, reusePort, counts, flags } satisfies WorkerSettings);
      });
    }

    try {
      await Promise.all(Array.from({ length: count }, (_, i) => startWorker(i + 1)));
    } catch (err) {
      for (const w of pool.values()) w.terminate();
      throw err;
    }
    // Ctrl+C, SIGTERM or SIGHUP: each worker finishes its replies (1.2 s at most)
    // and stops; a second one exits at once. Ready means ready for Ctrl+C too:
    // this goes in before the line is printed.
    const name = "socket_server_threads";
    const connections = () => Atomics.load(new Int32Array(counts), 0); // the pool's clients
    onStopSignal(async () => {
      const exitBy = performance.now() + 1800; // within 2 s of the signal
      stopping = true;
      const workers = [...pool.values()];
      const stopped = workers.map((w) =>
        new Promise<void>((resolve) => {
          w.addEventListener("message", (e) => e.data === "stopped" && resolve());
          w.postMessage("stop");
        })
      );
      await Promise.race([Promise.all(stopped), new Promise((r) => setTimeout(r, 1400))]);
      for (const w of workers) w.terminate();
      log("socket_server_threads: shut down");
      await flushLogs(exitBy - performance.now()); // the last lines, unless nobody reads them
      Deno.exit(0);
    }, { name, connections, say: log });
    // Written at once (console.log, not log): the line means ready, Ctrl+C included.
    console.log(`${plural(count, "worker thread")} sharing the port`);
    console.log(`listening on ${formatAddress({ transport: "tcp", hostname: flags.host, port })}`);
  });
}

/** Before any worker starts: can the workers load, can they share the port, is it free? */
async function preflight(
  flags: Flags,
): Promise<{ port: number; reusePort: boolean; count: number }> {
  // A worker loads its file and lib/ from disk: without them, or without
  // read access to them, it would die with a two-line "Uncaught (in worker)".
  if (WORKER_FILE.protocol === "file:") {
    const lib = new URL("../lib/", import.meta.url);
    for (const path of [WORKER_FILE, lib]) {
      if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") {
        throw new CliError(
          "the workers load scripts/workers/pool_worker.ts and lib/ from disk: run with " +
            "--allow-read=scripts,lib (deno task socket_server_threads does)",
        );
      }
    }
    try {
      Deno.statSync(WORKER_FILE);
    } catch {
      throw new CliError(
        `${WORKER_FILE.pathname} is missing: copy it beside this script (each worker runs it)`,
      );
    }
  }
  // Without unstable net, the unstable network functions are missing altogether.
  const why = Deno.build.os !== "linux"
    ? "reusePort spreads clients over threads only on Linux"
    : typeof Reflect.get(Deno, "listenDatagram") !== "function"
    ? `reusePort needs unstable net (--unstable-net or "unstable": ["net"] in deno.json)`
    : "";
  if (why && flags.workers > 1) log(`${why}: serving with 1 worker`);
  // A reusePort listener would silently join another server already on this
  // port, and the kernel would split the clients between the two. A plain
  // listener fails with "port in use" instead; it also picks the port for
  // --port 0. The workers bind that port once it is free again.
  let probe: Deno.TcpListener;
  try {
    probe = Deno.listen({ hostname: flags.host, port: flags.port });
  } catch (err) {
    throw await whyCannotListen(err, flags.host, flags.port); // names the address
  }
  const port = probe.addr.port;
  probe.close();
  return { port, reusePort: !why, count: why ? 1 : flags.workers };
}

await supervise();
