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
 * Its accept loop has the shape of socket_server_with_select.ts: the worker
 * calls `Deno.listen` itself, takes a place under the pool's cap or turns
 * the client away, and serves each client in `serve()`, which closes it. It
 * handles no signal: on Ctrl+C the supervisor posts "stop", and the worker
 * closes its listener and lets its clients finish (`OpenClients.closeAll`).
 * It imports nothing from the supervisor: it declares the settings it takes
 * (`WorkerSettings`), and the supervisor imports them from here.
 *
 * @module
 */

import { secondsToMs } from "../../lib/cli.ts";
import { closeQuietly, LineTooLongError, writeAll } from "../../lib/io.ts";
import { flushLogs, log as logLine, logError } from "../../lib/log.ts";
import { BatchLineReader, ReplyBatch } from "../../lib/many_clients.ts";
import { nextPoll } from "../../lib/fairness.ts";
import {
  acceptAgain,
  closeWhenIdleFor,
  LINE_TOO_LONG,
  OpenClients,
  shutDownLine,
  turnAway,
  whyCannotListen,
  whyClientFailed,
} from "../../lib/server.ts";
import { formatAddress } from "../../lib/text.ts";
import { traceConn } from "../../lib/trace.ts";

/** The flags a worker uses: the supervisor parses them and posts a copy. */
export interface PoolFlags {
  host: string;
  "max-conns": number; // for the whole pool
  "idle-timeout": number; // seconds; 0: never
  "max-line": number;
  "crash-after": number; // 0: never
  quiet: boolean;
  trace: boolean;
}

/** What the supervisor posts to a worker it starts: copies, except `counts`, which is shared. */
export interface WorkerSettings {
  id: number;
  slot: number; // its place in the pool, 1..workers, which a replacement takes over
  port: number;
  reusePort: boolean;
  counts: SharedArrayBuffer; // see sharedCap()
  flags: PoolFlags;
}

/** What a worker posts back. A crash before "listening" means it could not listen. */
export type WorkerReport = "listening" | "stopped" | { crashed: string };

/** A place under the pool's `--max-conns`: taken as a client comes, given back as it leaves. */
interface Place {
  /** Counts one more client, or returns false when the pool is full. */
  tryTake(): boolean;
  /** A counted client has left. */
  give(): void;
}

/**
 * The pool's `--max-conns`: counts[0] is the number of clients the whole pool
 * serves, counts[slot] the share of one worker. `Atomics.add` returns the
 * value before the addition, so taking a place is one indivisible step: two
 * workers cannot both see the last one free.
 */
function sharedCap(counts: SharedArrayBuffer, slot: number, max: number): Place {
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

const OK = new TextEncoder().encode("OK ... ");
const NEWLINE = new TextEncoder().encode("\n");
const clients = new OpenClients(); // this worker's: the ones "stop" lets finish, then closes
let listener: Deno.TcpListener | undefined; // "stop" closes it: the accept loop ends
let stopping = false; // the supervisor said "stop"
let log = logLine; // once started: every line begins with [worker N]

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

  supervisor.onmessage = async ({ data }: MessageEvent<WorkerSettings | "stop">) => {
    if (data === "stop") {
      // Ctrl+C, as the supervisor saw it: stop accepting, let replies finish, close the rest.
      stopping = true;
      if (listener) closeQuietly(listener);
      log(shutDownLine("this worker", await clients.closeAll()));
      await flushLogs(100); // its last lines, unless nobody reads them
      return report("stopped");
    }
    const { id, port, reusePort, flags } = data;
    log = (line) => logLine(`[worker ${id}] ${line}`);
    try {
      listener = Deno.listen({ hostname: flags.host, port, reusePort });
    } catch (err) {
      throw await whyCannotListen(err, flags.host, port); // a crash before "listening"
    }
    report("listening");
    await acceptClients(listener, data);
  };
}

/** Accepts until "stop" or, with `--crash-after N`, crashes after its Nth client. */
async function acceptClients(listener: Deno.TcpListener, settings: WorkerSettings) {
  const { flags } = settings;
  const pool = sharedCap(settings.counts, settings.slot, flags["max-conns"]);
  const crashAfter = flags["crash-after"] || Infinity;
  let served = 0;
  while (served < crashAfter) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (!stopping && await acceptAgain(err, log)) continue; // a client reset in the backlog: take the next
      return; // "stop" closed the listener
    }
    if (flags.trace) traceConn(conn, { print: logError }); // --trace: print every read and write on it
    conn.setNoDelay(true); // replies are small: don't let Nagle hold them back
    if (!pool.tryTake()) {
      turnAway(conn, log); // ERR server busy, and close it
      continue;
    }
    serve(conn, flags, pool); // not awaited: back to accept() while this client is served
    served++;
  }
  // Its last client: close the listener now, so that no one else queues on it,
  // and answer every client to the end.
  closeQuietly(listener);
  await clients.whenEmpty();
  // A real uncaught error (an unhandled rejection), once every reply was sent.
  if (!stopping) throw new Error(`deliberate crash after ${served} client(s)`);
}

/** Answers every line of one client with `OK ... <line>`, until it leaves. */
async function serve(conn: Deno.TcpConn, flags: PoolFlags, pool: Place): Promise<void> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn); // aborts at "stop"
  const idle = closeWhenIdleFor(conn, secondsToMs(flags["idle-timeout"]));
  if (!flags.quiet) log(`Client (${peer}) connected`);
  try {
    const lines = new BatchLineReader(conn, { maxLine: flags["max-line"], signal: stop });
    const replies = new ReplyBatch(conn, idle);
    // Every whole line that has arrived comes in one batch; null: the client is done.
    for (let batch = await lines.readBatch(); batch !== null; batch = await lines.readBatch()) {
      idle?.restart(); // a line came in: this client is not idle
      for (const line of batch) replies.add(OK, line, NEWLINE);
      await replies.send(); // one write() answers them all
      await nextPoll(); // fairness: the other clients get their turn before we read again
    }
    if (!flags.quiet) log(`Client (${peer}) is offline`);
  } catch (err) {
    if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG).catch(() => {});
    if (!stop.aborted) log(`${peer}: ${whyClientFailed(err, idle)}`); // one line, then the next client
  } finally {
    idle?.stop();
    clients.close(conn);
    pool.give(); // its place in the pool is free
  }
}

// Only a worker has WorkerGlobalScope; run directly, this file would wait for nothing.
if ("WorkerGlobalScope" in globalThis) beWorker();
else {
  console.error("error: this file is one worker of the pool: run scripts/socket_server_threads.ts");
  Deno.exit(2);
}
