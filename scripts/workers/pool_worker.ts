/**
 * workers/pool_worker.ts — one worker of socket_server_threads.ts:
 * a thread with its own listener on the shared port (`reusePort`), serving
 * the clients the kernel hands it, each line answered `OK ... <line>`. The
 * supervisor starts it as a Web Worker; it is not run on its own.
 *
 * Threads share no objects, but they can share memory made for sharing, a
 * SharedArrayBuffer: that is how `--max-conns` caps the whole pool. A
 * message is a copy that arrives later, so two workers counting clients by
 * messages could both take the last place; one counter in shared memory,
 * taken with `Atomics`, is the same number in every thread at once.
 *
 * @module
 */

import { secondsToMs } from "../../lib/deadline.ts";
import { LINE_TOO_LONG, LineTooLongError, listenErrorText } from "../../lib/errors.ts";
import { writeAll } from "../../lib/io.ts";
import { LineReader } from "../../lib/lines.ts";
import { nextPoll, ReplyBatch } from "../../lib/many_clients.ts";
import { type ConnectionCap, TcpServer } from "../../lib/server.ts";
import { traceConn } from "../../lib/trace.ts";
import type { Flags } from "../socket_server_threads.ts";
import { flushLogs, log as logLine } from "../../lib/log.ts";

/** What the supervisor posts to a worker it starts: copies, except `counts`, which is shared. */
export interface WorkerSettings {
  id: number;
  slot: number; // its place in the pool, 1..workers, which a replacement takes over
  port: number;
  reusePort: boolean;
  counts: SharedArrayBuffer; // see sharedCap()
  flags: Flags;
}

/** What a worker posts back. A crash before "listening" means it could not listen. */
export type WorkerReport = "listening" | "stopped" | { crashed: string };

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
      await flushLogs(100); // its last lines, unless nobody reads them
      return report("stopped");
    }
    const { id, slot, port, reusePort, counts, flags } = data;
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: flags.host, port, reusePort });
    } catch (err) {
      throw new Error(listenErrorText(err, flags.host, port)); // a crash before "listening"
    }
    const log = (line: string) => logLine(`[worker ${id}] ${line}`);
    server = new TcpServer(listener, {
      name: "this worker", // its log lines already start with [worker N]
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
    if (flags.trace) traceConn(conn); // --trace: print every read and write on it
    conn.setNoDelay(true); // replies are small: don't let Nagle hold them back
    // Not awaited: the loop goes straight back to accept() while this client is served.
    server.handle(conn, async ({ peer, idle, signal }) => {
      log(`Client (${peer}) connected`);
      const lines = new LineReader(conn, { maxLine: flags["max-line"], signal });
      const replies = new ReplyBatch(conn, idle);
      try {
        while (true) {
          const batch = await lines.readBatch(); // every whole line that has arrived
          if (batch === null) break; // the client is done (or Ctrl+C)
          idle?.restart(); // a line came in: this client is not idle
          for (const line of batch) replies.add(OK, line, NEWLINE);
          await replies.send(); // one write() answers them all
          await nextPoll(); // fairness: the other clients get their turn before we read again
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

// Only a worker has WorkerGlobalScope; run directly, this file would wait for nothing.
if ("WorkerGlobalScope" in globalThis) beWorker();
else {
  console.error("error: this file is one worker of the pool: run scripts/socket_server_threads.ts");
  Deno.exit(2);
}
