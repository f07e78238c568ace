/**
 * socket_server_threads.ts — many clients at once, served by a pool of
 * threads (Web Workers), each line answered `OK ... <line>`.
 *
 * The seed (`socket_server_threads.py`) accepted in the main thread and
 * started a thread per client, handing it the socket. Deno cannot do that: a
 * `Deno.Conn` is a handle owned by the thread that opened it and cannot be
 * posted to a Worker (workers share no objects, only copies or transferred
 * buffers). Relaying every byte through the main thread would make it the
 * bottleneck. So each worker opens its *own* listener on the same port with
 * `reusePort` (SO_REUSEPORT), and the kernel spreads new connections across
 * the workers; each worker then serves its clients exactly as
 * socket_server_with_select.ts does, on its own thread and CPU core. The main
 * thread only supervises: it starts `--workers` workers (default: the number
 * of CPUs), replaces one that crashes (and says so: try `--crash-after 1`),
 * recycles them if asked (`--recycle-after N`, the successor listens before
 * the old one stops), and on Ctrl+C tells them all to drain and stop.
 *
 * `reusePort` is Linux-only and needs `--unstable-net`; elsewhere the pool
 * falls back to a single worker and says so. Workers share nothing with the
 * main thread but the messages they post. This file is both: run directly it
 * is the supervisor; loaded as a worker (`new Worker(import.meta.url)`), it
 * serves. A worker loads its code from disk, which is why the supervisor needs
 * `--allow-read` for this file and lib/.
 *
 * Run:
 *   deno run --allow-net=127.0.0.1,[::1] --allow-read=scripts/socket_server_threads.ts,lib scripts/socket_server_threads.ts
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
import { serveLines } from "../lib/lines.ts";
import { formatAddress, lineLimits, TcpServer } from "../lib/server.ts";

/** What the supervisor tells a worker when it starts it. */
interface WorkerSettings {
  id: number;
  host: string;
  port: number;
  reusePort: boolean;
  maxConns: number;
  limits: { "max-line": number; "idle-timeout": number };
  quiet: boolean;
  maxClients: number;
  crashAfter: number;
}

/** What a worker tells the supervisor. */
type WorkerReport =
  | { type: "listening"; port: number }
  | { type: "failed"; message: string }
  | { type: "retiring" } // accepted its quota: start my successor, then tell me "retire"
  | { type: "handed-over" } // no longer accepting
  | { type: "crashed"; message: string } // an uncaught error: this worker is ending
  | { type: "stopped" };

// WorkerGlobalScope exists only inside a worker: that is how this file knows its role.
const IS_WORKER = "WorkerGlobalScope" in globalThis;

/** Inside a worker, `self` is the worker's global scope (typed as a window by default). */
const workerScope = globalThis as unknown as {
  onmessage: (e: MessageEvent<WorkerSettings | "stop" | "retire">) => void;
  postMessage(message: WorkerReport): void;
  close(): void;
};

if (IS_WORKER) {
  // An uncaught error ends this worker: tell the supervisor in one line (no
  // stack trace on the terminal) and exit; the supervisor starts a new one.
  const crash = (message: string) => {
    report({ type: "crashed", message });
    workerScope.close();
  };
  addEventListener("error", (e) => {
    e.preventDefault();
    crash(e.message);
  });
  addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    crash(String(e.reason?.message ?? e.reason));
  });
  workerScope.onmessage = (e) => {
    if (e.data === "stop") stopWorker();
    else if (e.data === "retire") retireWorker();
    else serveInWorker(e.data);
  };
} else {
  await supervise();
}

// ---------------------------------------------------------------- the worker

let workerServer: TcpServer | undefined;
let acceptLoopDone: Promise<void> | undefined;

function report(message: WorkerReport) {
  workerScope.postMessage(message);
}

async function serveInWorker(s: WorkerSettings) {
  const tag = `[worker ${s.id}]`;
  const log = s.quiet ? () => {} : (line: string) => console.log(`${tag} ${line}`);
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: s.host, port: s.port, reusePort: s.reusePort });
  } catch (err) {
    return report({ type: "failed", message: (err as Error).message });
  }
  let acceptLoopEnded!: () => void;
  acceptLoopDone = new Promise((resolve) => acceptLoopEnded = resolve);
  const server = workerServer = new TcpServer(listener, {
    name: `worker ${s.id}`,
    maxConns: s.maxConns,
    handleSignals: false, // the supervisor handles Ctrl+C and tells us
    log: (line) => console.log(`${tag} ${line}`),
  });
  report({ type: "listening", port: listener.addr.port });
  const OK = new TextEncoder().encode("OK ... ");
  const NEWLINE = new TextEncoder().encode("\n");
  let served = 0;
  for await (const conn of server.accept()) {
    conn.setNoDelay(true);
    const done = server.handle(conn, async (conn, peer) => {
      log(`Client (${peer}) connected`);
      await serveLines(conn, (line) => [OK, line, NEWLINE], lineLimits(s.limits, server.signal));
      log(`Client (${peer}) is offline`);
    });
    served++;
    if (served === s.maxClients) report({ type: "retiring" });
    if (served === s.crashAfter) {
      // --crash-after: a real uncaught error, to show the supervisor at work.
      done.then(() =>
        setTimeout(() => {
          throw new Error(`deliberate crash after ${s.crashAfter} client(s)`);
        })
      );
    }
  }
  acceptLoopEnded();
}

/** Our successor listens on the port now: stop accepting, finish our clients, exit. */
async function retireWorker() {
  const done = workerServer?.stopAccepting();
  // Only once the pending accept() has ended is the socket really gone from the port.
  await acceptLoopDone;
  report({ type: "handed-over" });
  await done;
  report({ type: "stopped" });
  workerScope.close();
}

async function stopWorker() {
  await workerServer?.shutdown();
  report({ type: "stopped" });
}

// ------------------------------------------------------------ the supervisor

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
        default: navigator.hardwareConcurrency,
        help: "worker threads (default: one per CPU)",
      },
      "max-conns": {
        kind: "integer",
        min: 1,
        default: 10_000,
        help: "clients served at once, per worker",
      },
      "recycle-after": {
        kind: "integer",
        min: 0,
        default: 0,
        help: "replace a worker after it accepted N clients (0: never)",
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
    const linux = Deno.build.os === "linux";
    const count = linux ? args.workers : 1;
    if (!linux && args.workers > 1) {
      console.log(`reusePort needs Linux: serving with 1 worker instead of ${args.workers}`);
    }
    const settings = (id: number, port: number): WorkerSettings => ({
      id,
      host: args.host,
      port,
      reusePort: linux,
      maxConns: args["max-conns"],
      limits: { "max-line": args["max-line"], "idle-timeout": args["idle-timeout"] },
      quiet: args.quiet,
      maxClients: args["recycle-after"],
      crashAfter: args["crash-after"],
    });

    const workers = new Map<number, Worker>();
    let stopping = false;
    let nextId = 1;
    let port = args.port; // becomes the port really bound, once the first worker listens

    /** Starts a worker on `port`; resolves with its id and the port it bound. */
    function startWorker(): Promise<{ id: number; port: number }> {
      const id = nextId++;
      const worker = new Worker(import.meta.url, { type: "module", name: `worker ${id}` });
      workers.set(id, worker);
      let listening = false;
      return new Promise((resolve, reject) => {
        worker.onmessage = ({ data: m }: MessageEvent<WorkerReport>) => {
          if (m.type === "listening") {
            listening = true;
            resolve({ id, port: m.port });
          } else if (m.type === "failed") {
            workers.delete(id);
            worker.terminate();
            reject(new Error(m.message));
          } else if (m.type === "retiring") {
            retire(id, worker);
          } else if (m.type === "stopped") {
            workers.delete(id);
          } else if (m.type === "crashed") {
            crashed(m.message);
          }
        };
        // A crash the worker could not report itself (it should not happen).
        worker.onerror = (e: ErrorEvent) => {
          e.preventDefault(); // contain it: one worker's crash must not end the server
          crashed(e.message);
        };
        const crashed = (message: string) => {
          worker.terminate();
          // Replace a worker that was serving; one that never listened would fail again.
          if (workers.delete(id) && listening && !stopping) {
            console.log(`worker ${id} crashed (${message}); starting a new one`);
            startWorker().then(
              (next) => console.log(`worker ${next.id} replaced worker ${id}`),
              (err) => console.log(`could not replace worker ${id}: ${err.message}`),
            );
          }
          reject(new Error(message));
        };
        worker.postMessage(settings(id, port));
      });
    }

    /** Recycling: the successor listens before the old worker stops accepting, so no client is refused. */
    async function retire(id: number, worker: Worker) {
      try {
        const next = await startWorker();
        worker.addEventListener("message", ({ data }) => {
          if ((data as WorkerReport).type !== "handed-over") return;
          console.log(
            `worker ${id} retired after ${
              args["recycle-after"]
            } clients; worker ${next.id} took over`,
          );
        });
        worker.postMessage("retire");
      } catch (err) {
        console.log(`could not start a successor to worker ${id}: ${(err as Error).message}`);
      }
    }

    // The first worker binds (port 0 picks a free port); the rest join that port.
    try {
      ({ port } = await startWorker());
    } catch (err) {
      for (const w of workers.values()) w.terminate();
      throw listenError(err as Error, args.host, args.port);
    }
    await Promise.all(Array.from({ length: count - 1 }, () => startWorker()));
    console.log(`${count} worker thread(s) sharing the port`);
    console.log(`listening on ${formatAddress({ transport: "tcp", hostname: args.host, port })}`);

    const shutdown = async () => {
      if (stopping) Deno.exit(0); // second Ctrl+C: now
      stopping = true;
      const stopped = [...workers.values()].map((w) =>
        new Promise<void>((resolve) => {
          w.addEventListener("message", (e) =>
            (e as MessageEvent).data?.type === "stopped" && resolve());
          w.postMessage("stop");
        })
      );
      await Promise.race([Promise.all(stopped), new Promise((r) => setTimeout(r, 1800))]);
      for (const w of workers.values()) w.terminate();
      console.log(`socket_server_threads: shut down`);
      Deno.exit(0);
    };
    Deno.addSignalListener("SIGINT", shutdown);
    if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", shutdown);
  });
}

function listenError(err: Error, host: string, port: number): Error {
  if (/in use/i.test(err.message)) {
    return new Error(
      `port ${port} is already in use on ${host}: stop the other server, or pick another --port (--port 0 takes a free one)`,
    );
  }
  if (/unstable/i.test(err.message)) {
    return new Error(`reusePort needs the --unstable-net flag: ${err.message}`);
  }
  if (/requires net access|NotCapable/i.test(err.message)) {
    return new Error(`no permission to listen on ${host}:${port}: run with --allow-net=${host}`);
  }
  return new Error(`cannot listen on ${host}:${port}: ${err.message}`);
}
