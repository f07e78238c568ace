/**
 * socket_server_threads.ts — many clients at once, served by a pool of
 * threads (Web Workers), each line answered `OK ... <line>`.
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
 * Threads can also share memory made for sharing, a SharedArrayBuffer: that
 * is how `--max-conns` caps the whole pool. A message is a copy that arrives
 * later, so two workers counting clients by messages could both take the
 * last place; one counter in shared memory, taken with `Atomics`, is the
 * same number in every thread at once.
 *
 * Two roles, each in its own part below (the last lines pick one). The
 * supervisor, `supervise()`, is the main thread and never touches a client:
 * it starts `--workers` workers (default: one per CPU), each
 * `new Worker(import.meta.url)`, this file read from disk (hence
 * `--allow-read` for it and lib/), replaces one that crashes, and on Ctrl+C
 * tells them all to finish their replies and stop. A worker, `beWorker()`,
 * listens, accepts and answers.
 *
 * `--crash-after N` shows a replacement: a worker closes its listener as it
 * accepts its Nth client (the kernel sends later ones to the others; any
 * already queued on it are reset), answers its clients to the end, then
 * throws. While no worker listens, new clients are refused and can retry.
 * Workers are not recycled: closing a reusePort listener drops the
 * connections queued on it, so no hand-over can be lossless.
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

import { lineServerFlags, parseCli, runMain } from "../lib/cli.ts";
import { secondsToMs } from "../lib/deadline.ts";
import { CliError, LINE_TOO_LONG, LineTooLongError, listenErrorText } from "../lib/errors.ts";
import { writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";
import { ReplyBatch } from "../lib/replies.ts";
import { type ConnectionCap, listen, TcpServer } from "../lib/server.ts";
import { onStopSignal } from "../lib/signals.ts";
import { formatAddress } from "../lib/text.ts";

/** More would only add threads competing for the same cores. */
const MAX_WORKERS = 32;

// ===================================================== what the roles share

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

/** What the supervisor posts to a worker it starts: copies, except `counts`, which is shared. */
interface WorkerSettings {
  id: number;
  slot: number; // its place in the pool, 1..workers, which a replacement takes over
  port: number;
  reusePort: boolean;
  counts: SharedArrayBuffer; // see sharedCap()
  flags: Flags;
}

/** What a worker posts back. A crash before "listening" means it could not listen. */
type WorkerReport = "listening" | "stopped" | { crashed: string };

/**
 * The pool's `--max-conns`: counts[0] is the number of clients the whole pool
 * serves, counts[slot] the share of one worker. `Atomics.add` returns the
 * value before the addition, so taking a place is one indivisible step: two
 * workers cannot both see the last one free.
 */
function sharedCap(counts: SharedArrayBuffer, slot: number, max: number): ConnectionCap {
  const cells = new Int32Array(counts);
  return {
    tryTake() {
      if (Atomics.add(cells, 0, 1) < max) {
        Atomics.add(cells, slot, 1);
        return true;
      }
      Atomics.sub(cells, 0, 1); // over the cap: undo
      return false;
    },
    give() {
      Atomics.sub(cells, slot, 1);
      Atomics.sub(cells, 0, 1);
    },
  };
}

/** A worker died: the supervisor gives back the places its clients held, so the cap stays true. */
function freeShare(counts: SharedArrayBuffer, slot: number): void {
  const cells = new Int32Array(counts);
  Atomics.sub(cells, 0, Atomics.exchange(cells, slot, 0));
}

// ======================== the supervisor: the main thread, which never touches a client

async function supervise(): Promise<void> {
  const flags = parseFlags();
  await runMain(async () => {
    const { port, reusePort, count } = preflight(flags);
    const counts = new SharedArrayBuffer(4 * (count + 1)); // see sharedCap()
    const pool = new Map<number, Worker>(); // slot -> its worker
    let nextId = 1;
    let stopping = false;

    /** Starts a worker in `slot`; resolves once it listens, rejects if it ends before. */
    function startWorker(slot: number): Promise<void> {
      const id = nextId++;
      const worker = new Worker(import.meta.url, { type: "module", name: `worker ${id}` });
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
          console.log(`worker ${id} crashed (${message}); starting worker ${nextId} in its place`);
          startWorker(slot).catch((err) =>
            console.log(`could not replace worker ${id}: ${err.message}`)
          );
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
    // Ctrl+C or SIGTERM: each worker finishes its replies (1.5 s at most) and
    // stops. Ready means ready for Ctrl+C too: this goes in before the line is printed.
    onStopSignal(async () => {
      stopping = true;
      const workers = [...pool.values()];
      const stopped = workers.map((w) =>
        new Promise<void>((resolve) => {
          w.addEventListener("message", (e) => e.data === "stopped" && resolve());
          w.postMessage("stop");
        })
      );
      await Promise.race([Promise.all(stopped), new Promise((r) => setTimeout(r, 1800))]);
      for (const w of workers) w.terminate();
      console.log("socket_server_threads: shut down");
      Deno.exit(0);
    });
    console.log(`${count} worker thread(s) sharing the port`);
    console.log(`listening on ${formatAddress({ transport: "tcp", hostname: flags.host, port })}`);
  });
}

/** Before any worker starts: can the workers load, can they share the port, is it free? */
function preflight(flags: Flags): { port: number; reusePort: boolean; count: number } {
  // A worker loads this file from disk: without read access it would die
  // with a two-line "Uncaught (in worker)" error.
  const file = new URL(import.meta.url);
  if (
    file.protocol === "file:" &&
    Deno.permissions.querySync({ name: "read", path: file }).state !== "granted"
  ) {
    throw new CliError(
      "the workers load this file and lib/ from disk: run with " +
        "--allow-read=scripts/socket_server_threads.ts,lib (deno task socket_server_threads does)",
    );
  }
  // Without unstable net, the unstable network functions are missing altogether.
  const why = Deno.build.os !== "linux"
    ? "reusePort spreads clients over threads only on Linux"
    : typeof Reflect.get(Deno, "listenDatagram") !== "function"
    ? `reusePort needs unstable net (--unstable-net or "unstable": ["net"] in deno.json)`
    : "";
  if (why && flags.workers > 1) console.log(`${why}: serving with 1 worker`);
  // A reusePort listener would silently join another server already on this
  // port, and the kernel would split the clients between the two. A plain
  // listener fails with "port in use" instead; it also picks the port for
  // --port 0. The workers bind that port once it is free again.
  const probe = listen(flags.host, flags.port);
  const port = probe.addr.port;
  probe.close();
  return { port, reusePort: !why, count: why ? 1 : flags.workers };
}

// ============================== a worker: one thread, its own listener, its clients

function beWorker(): void {
  // Inside a worker, the global scope faces the supervisor as a Worker object faces the worker.
  const supervisor = globalThis as unknown as Worker;
  const report = (message: WorkerReport) => supervisor.postMessage(message);
  // An uncaught error ends this worker: tell the supervisor in one line (no
  // stack trace on the terminal) and exit; the supervisor starts a new one.
  const crash = (e: Event, error: unknown) => {
    e.preventDefault();
    report({ crashed: error instanceof Error ? error.message : String(error) });
    close();
  };
  addEventListener("error", (e) => crash(e, e.error ?? e.message));
  addEventListener("unhandledrejection", (e) => crash(e, e.reason));

  let server: TcpServer | undefined;
  supervisor.onmessage = async ({ data }: MessageEvent<WorkerSettings | "stop">) => {
    if (data === "stop") {
      await server?.shutdown();
      return report("stopped");
    }
    const { id, slot, port, reusePort, counts, flags } = data;
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: flags.host, port, reusePort });
    } catch (err) {
      throw new Error(listenErrorText(err, flags.host, port)); // a crash before "listening"
    }
    const log = (line: string) => console.log(`[worker ${id}] ${line}`);
    server = new TcpServer(listener, {
      name: `worker ${id}`,
      maxConns: sharedCap(counts, slot, flags["max-conns"]),
      idleTimeoutMs: secondsToMs(flags["idle-timeout"]),
      handleSignals: false, // the supervisor handles Ctrl+C and tells us
      log,
    });
    report("listening");
    await serveClients(server, flags, flags.quiet ? () => {} : log);
  };
}

const OK = new TextEncoder().encode("OK ... ");
const NEWLINE = new TextEncoder().encode("\n");

/** Serves clients until shutdown or, with `--crash-after N`, crashes after its Nth. */
async function serveClients(server: TcpServer, flags: Flags, log: (line: string) => void) {
  const crashAfter = flags["crash-after"] || Infinity;
  let served = 0;
  for await (const conn of server.accept()) {
    conn.setNoDelay(true);
    // Not awaited: the loop goes straight back to accept() while this client is served.
    server.handle(conn, async ({ peer, idle, signal }) => {
      log(`Client (${peer}) connected`);
      const lines = new LineReader(conn, { maxLine: flags["max-line"], signal });
      const replies = new ReplyBatch(conn, idle);
      try {
        for await (const batch of lines.batches()) { // every whole line that has arrived
          idle?.restart(); // a line came in: this client is not idle
          for (const line of batch) replies.add(OK, line, NEWLINE);
          await replies.send(); // one write() answers them all
        }
      } catch (err) {
        if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG); // say why
        throw err; // handle() logs it in one line and closes the connection
      }
      log(`Client (${peer}) is offline`);
    });
    if (++served === crashAfter) break;
  }
  if (served < crashAfter) return; // shut down
  // Its last client: close the listener now, so that no one else queues on it,
  // and answer every client to the end.
  await server.stopAccepting();
  // A real uncaught error (an unhandled rejection), once every reply was sent.
  if (!server.signal.aborted) throw new Error(`deliberate crash after ${served} client(s)`);
}

// ================================================================ which role

// WorkerGlobalScope exists only inside a worker: that is how this file knows its role.
if ("WorkerGlobalScope" in globalThis) beWorker();
else await supervise();
