/**
 * chat_server.ts — a chat room: each client first gives a name, then every
 * line it sends goes to every other client as `name: line`; joins and leaves
 * are announced as `* alice joined` and `* alice left`.
 *
 * Names: the server asks `* name?`. A name is 1 to 16 ASCII letters, digits,
 * `_` or `-`, starting with a letter (IRC's rule), and case does not count:
 * while `alice` is in, `ALICE` is taken (the room shows a name as it was
 * typed). So nobody can pass for alice with a look-alike (a Cyrillic or
 * fullwidth `a`, an accent that combines with the `e`) or take a name that
 * shows as blank. A bad or taken name gets one `ERR ...` line that says the
 * rule, and `* name?` again. Lines are passed on as the very bytes that came
 * (never decoded); only the log decodes them, control bytes escaped. A line
 * counts once its `\n` arrives: a client that leaves mid-line (reset, crash,
 * `printf 'x' | nc`) has its unfinished line sent to nobody.
 *
 * One thread, on purpose: a broadcast touches every connection, and a socket
 * cannot be handed to a worker, so workers would need a shared bus carrying
 * every line between them. One event loop reaches every socket directly.
 *
 * Slow readers are the hard part. Each client has its own queue of bytes owed
 * to it (`--max-queue`, 256 KiB, beyond what the kernel's socket buffers
 * hold) and its own writer loop draining it, at most 16 KiB per `write()`. A
 * broadcast only appends to the queues (one shared copy of the line) and
 * never waits for a write, so a client that stops reading cannot stall the
 * room. Queues are first in, first out, so each sender's lines reach everyone
 * in the order sent. A client whose queue would overflow is dropped: what it
 * is owed and not yet written is thrown away, the line being written is
 * finished, then come `ERR too slow, disconnected` and the end of the stream.
 * So a reader that still takes its bytes gets whole lines and the reason. Not
 * at once: Linux lets a send buffer grow to 4 MB and wakes a blocked writer
 * only when a third of it has drained (measured here: 7 s for a reader taking
 * 150 KB/s, 12 s at 100 KB/s), and before that the server cannot tell a slow
 * reader from one that takes nothing. So a dropped client gets up to 15 s for
 * its last line and its ERR, then 1 s for them to travel (less if it closes
 * first), and is closed: a reader taking 100 KB/s still hears why, and one
 * that takes nothing holds its place for those 15 s (its queue is freed at
 * once).
 *
 * Flooding: a sender faster than the readers would get them all dropped. So
 * each client may send the room `--max-rate` bytes a second (32 KiB, counted
 * as the others receive them: `name: line` and its newline), in bursts of up
 * to 2 s of it (64 KiB): a token bucket, like IRC's "Excess Flood". Nobody
 * typing or pasting a page comes near it. A client over it gets `ERR flooding,
 * disconnected` and is closed the same way; its lines up to the limit are
 * passed on, whole. So a reader taking 100 KB/s keeps up with any one sender
 * (several flooding at once can still outrun it; then the slow-reader rule
 * holds).
 *
 * Places: `--max-conns` (1000) caps the clients, so a place must not be held
 * for nothing. A client that has no accepted name after `--name-timeout` (30
 * s) gets `ERR no name within 30 s, disconnected` and is closed: otherwise
 * 1,000 sockets that never send a byte would lock everyone out, for ever.
 * `--idle-timeout` is 600 s (10 minutes): a connection that for that long
 * neither completes a line nor takes a byte it is owed (a peer that vanished
 * without a word, a socket parked to hold a place) gives its place back. The
 * price: someone who only listens to a room that stays silent for 10 minutes
 * is let go too (`--idle-timeout 0` for a private room). `--max-line` is 1 KiB
 * by default, plenty for chat.
 *
 * The socket calls are all here, as in socket_server_with_select.ts:
 * `Deno.listen`, the accept loop, and `serve()`, which runs one client's
 * `chat()` and closes its connection whatever happens. Ctrl+C (`* server
 * closing` to everyone named, then the shutdown), the cap and the idle
 * deadline are a named call each (lib/server.ts).
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' scripts/chat_server.ts
 *   deno task chat_server            (same thing)
 *
 * Try it from a second terminal:
 *   $ printf 'alice\nhello\n' | nc -N 127.0.0.1 8890
 *   * name?
 *   * welcome alice; nobody else is here
 * and the server prints:
 *   alice (127.0.0.1:PORT) joined
 *   alice: hello
 *   alice left
 *
 * Then chat from several terminals (the first line you type is your name):
 *   $ deno task chat_client
 *
 * or with nc, typing by hand:
 *   $ nc 127.0.0.1 8890
 *
 * @module
 */

import { parseCli, runMain, secondsToMs } from "../lib/cli.ts";
import { concatBytes, LineTooLongError, type StopSignal, writeAll } from "../lib/io.ts";
import { BatchLineReader, lineServerFlags } from "../lib/many_clients.ts";
import { nextPoll } from "../lib/fairness.ts";
import { log, logError } from "../lib/log.ts";
import {
  acceptAgain,
  closeWhenIdleFor,
  type IdleClock,
  LINE_TOO_LONG,
  OpenClients,
  stopOnSignal,
  turnAway,
  whyCannotListen,
  whyClientFailed,
} from "../lib/server.ts";
import { formatAddress, LOG_PREVIEW, showBytes } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";

const flags = lineServerFlags(8890, 600);
const args = parseCli({
  name: "chat_server",
  summary: "A chat room: a name first, then every line goes to everyone else as 'name: line'. " +
    "A name is 1 to 16 ASCII letters, digits, _ or -, starting with a letter, and case does " +
    "not count: ALICE is taken while alice is in (the room shows a name as it was typed).",
  options: {
    ...flags,
    "max-line": { ...flags["max-line"], default: 1024 },
    "max-queue": {
      kind: "integer",
      min: 1024,
      max: 64 * 1024 * 1024,
      default: 256 * 1024,
      help: "bytes owed to one client before it is dropped as too slow",
    },
    "max-rate": {
      kind: "integer",
      max: 1024 * 1024 * 1024,
      default: 32 * 1024,
      valueName: "BYTES_PER_S",
      help: "bytes per second one client may send into the room, counted as 'name: line', " +
        "in bursts of up to 2 s of it; over it: 'ERR flooding, disconnected' (0: no limit)",
    },
    "name-timeout": {
      kind: "seconds",
      default: 30,
      help: "disconnect a client that has no accepted name after this long (0: never)",
    },
    "max-conns": { kind: "integer", min: 1, max: 100_000, default: 1000, help: "clients at once" },
    quiet: { kind: "boolean", help: "do not log lines, joins and leaves" },
  },
});

/** A connected client, named or not yet. */
interface Client {
  conn: Deno.Conn;
  stop: StopSignal; // aborts at Ctrl+C
  lines: BatchLineReader; // what it sends, line by line
  name: string; // "" until it has chosen one
  prefix: Uint8Array; // `name: `
  queue: Uint8Array[]; // bytes owed to it, oldest first, each whole lines
  owed: number; // bytes in the queue and in the piece being written
  wake?: () => void; // its writer waits on this while the queue is empty
  done: boolean; // nothing more will be queued; the writer stops once the queue is empty
  farewell?: Uint8Array; // set when we disconnect it: its last line (an ERR), sent in place of the queue
  allowance: number; // bytes it may still send into the room now (--max-rate's bucket)
  refilledAt: number; // when the allowance was last topped up (ms, monotonic)
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const text = (s: string) => encoder.encode(`${s}\n`);
const NEWLINE = text("");
const ASK_NAME = text("* name?");
const NAME_RULE = /^[A-Za-z][A-Za-z0-9_-]{0,15}$/;
const BAD_NAME = text(
  "ERR a name is 1 to 16 ASCII letters, digits, _ or -, starting with a letter",
);
const TOO_SLOW = text("ERR too slow, disconnected");
const FLOODING = text("ERR flooding, disconnected");
const CLOSING = text("* server closing");
const NO_NAME = text(`ERR no name within ${args["name-timeout"]} s, disconnected`);
const PIECE = 16 * 1024; // the most one write() is given: between writes, a drop can cut in
const GRACE_MS = 1000; // how long a leaving client may take to receive what it is owed
const DROP_WAIT_MS = 15_000; // how long a disconnected client gets to take its last line and ERR
const RATE = args["max-rate"]; // bytes per second; the bucket holds 2 s of it
const clients = new OpenClients(); // the connections Ctrl+C lets finish, then closes
const room = new Set<Client>(); // the same clients, as the room sees them
const names = new Map<string, string>(); // lower case -> the name as typed
const logRoom = args.quiet ? () => {} : log; // lines, joins, leaves (log: never waits for a reader)

/** Queues bytes for one client, or drops it if its queue would overflow. Never waits. */
function send(client: Client, bytes: Uint8Array): void {
  if (client.done) return;
  if (client.owed + bytes.length > args["max-queue"]) {
    const who = client.name || formatAddress(client.conn.remoteAddr);
    log(`${who}: ${client.owed} bytes not taken, too slow, dropped`);
    disconnect(client, TOO_SLOW);
    return;
  }
  client.queue.push(bytes);
  client.owed += bytes.length;
  client.wake?.();
}

/**
 * Ends a client's stay, telling it why in `farewell` (an `ERR` line): what it
 * was owed and not yet sent is thrown away, its writer finishes the line it is
 * writing and sends `farewell`, and its reader stops. Never waits.
 */
function disconnect(client: Client, farewell: Uint8Array): void {
  if (client.farewell) return;
  client.farewell = farewell;
  client.done = true;
  client.queue = [];
  client.wake?.();
  client.lines.close(); // its lines go nowhere now; chat() ends and waits for the writer
  queueMicrotask(() => leave(client)); // announced after the broadcast in progress
}

/** The same bytes (one copy, shared by all queues) to every named client but `from`. */
function broadcast(from: Client | undefined, bytes: Uint8Array): void {
  for (const c of room) if (c !== from && c.name) send(c, bytes);
}

function leave(client: Client): void {
  if (!names.delete(client.name.toLowerCase())) return;
  logRoom(`${client.name} left`);
  if (!client.stop.aborted) broadcast(client, text(`* ${client.name} left`)); // not at Ctrl+C
}

/**
 * Drains one client's queue; the only place that ever waits for this client.
 * True once it has sent the farewell of a client we disconnected.
 */
async function writer(client: Client, idle: IdleClock | undefined): Promise<boolean> {
  try {
    while (!client.farewell) {
      if (client.queue.length === 0) {
        if (client.done) return false;
        await new Promise<void>((resolve) => client.wake = resolve);
        client.wake = undefined;
        continue;
      }
      await writePiece(client, takePiece(client), idle);
    }
    // Disconnected: the line under way is finished, then the reason, then end of stream.
    await writeAll(client.conn, client.farewell, idle);
    await client.conn.closeWrite();
    return true;
  } catch {
    client.done = true; // it went away (or was hung up on); its reader finds out too
    return false;
  }
}

/** Whole lines from the head of the queue: up to PIECE bytes, or one longer line. */
function takePiece(client: Client): Uint8Array {
  let size = 0;
  let count = 0;
  for (const chunk of client.queue) {
    if (count > 0 && size + chunk.length > PIECE) break;
    size += chunk.length;
    count++;
  }
  const taken = client.queue.splice(0, count);
  return count === 1 ? taken[0] : concatBytes(taken);
}

/**
 * Writes `piece` at most PIECE bytes per `write()`. If the client is
 * disconnected meanwhile, it stops at the end of the line under way: the
 * client gets whole lines, and its `ERR` comes next.
 */
async function writePiece(client: Client, piece: Uint8Array, idle: IdleClock | undefined) {
  let end = piece.length;
  for (let at = 0; at < end;) {
    const n = await client.conn.write(piece.subarray(at, Math.min(end, at + PIECE)));
    at += n;
    client.owed -= n;
    idle?.restart(); // it took bytes: not idle
    if (client.farewell && end === piece.length) {
      end = at === 0 || piece[at - 1] === NEWLINE[0] ? at : piece.indexOf(NEWLINE[0], at) + 1;
    }
  }
}

/**
 * Takes `bytes` from the client's allowance (a token bucket: it refills at
 * --max-rate and holds 2 s of it). False when the allowance is used up: the
 * client sends faster than anyone types or pastes.
 */
function withinRate(client: Client, bytes: number, now: number): boolean {
  if (RATE === 0) return true;
  client.allowance = Math.min(2 * RATE, client.allowance + (now - client.refilledAt) * RATE / 1000);
  client.refilledAt = now;
  if (client.allowance <= 0) return false;
  client.allowance -= bytes; // may go below 0: one long line is not a flood, the next one pays
  return true;
}

/** The name a line asks for, or the `ERR` line refusing it. */
function checkName(bytes: Uint8Array): string | Uint8Array {
  const name = decoder.decode(bytes); // anything not ASCII fails the rule
  if (!NAME_RULE.test(name)) return BAD_NAME;
  const holder = names.get(name.toLowerCase());
  if (holder === undefined) return name;
  if (holder === name) return text(`ERR the name ${name} is taken`);
  return text(`ERR the name ${name} is taken: ${holder} is here, and case does not count`);
}

/**
 * One client's stay in the room: its name, then its lines to everyone else.
 * Throws what went wrong with its connection; `serve` logs it and closes it.
 */
async function chat(
  conn: Deno.Conn,
  peer: string,
  stop: StopSignal,
  idle: IdleClock | undefined,
): Promise<void> {
  // A line counts once its newline comes: what a client leaves unfinished goes to nobody.
  const lines = new BatchLineReader(conn, {
    maxLine: args["max-line"],
    requireNewline: true,
    signal: stop,
  });
  const client: Client = {
    conn,
    stop,
    lines,
    name: "",
    prefix: NEWLINE,
    queue: [],
    owed: 0,
    done: false,
    allowance: 2 * RATE,
    refilledAt: performance.now(),
  };
  room.add(client);
  // Ctrl+C: a named client's last line, after what it is already owed.
  stop.addEventListener("abort", () => {
    if (client.name) send(client, CLOSING);
  }, { once: true });
  const writing = writer(client, idle);
  // A place in the room is taken at connect: one that gives no name gives it back.
  const nameMs = secondsToMs(args["name-timeout"]);
  const nameTimer = nameMs === undefined ? undefined : setTimeout(() => {
    if (client.name || client.farewell) return;
    log(`${peer}: no name within ${args["name-timeout"]} s, disconnected`);
    disconnect(client, NO_NAME);
  }, nameMs);
  try {
    send(client, ASK_NAME);
    while (!client.name) {
      const line = await lines.readLine();
      if (client.farewell) return; // the name timeout came first
      if (line === null) {
        return logRoom(
          `${peer} ${stop.aborted ? "closed at shutdown" : "left without a name"}`,
        );
      }
      idle?.restart();
      const name = checkName(line);
      if (typeof name !== "string") {
        logRoom(`${peer}: name refused: ${showBytes(line, LOG_PREVIEW)}`);
        send(client, name);
        send(client, ASK_NAME);
        continue;
      }
      const others = [...names.values().take(20)]; // a short list, even in a crowd
      if (names.size > 20) others.push(`and ${names.size - 20} more`);
      clearTimeout(nameTimer);
      client.name = name;
      client.prefix = encoder.encode(`${name}: `);
      names.set(name.toLowerCase(), name);
      logRoom(`${name} (${peer}) joined`);
      const here = others.length ? `here: ${others.join(", ")}` : "nobody else is here";
      send(client, text(`* welcome ${name}; ${here}`));
      broadcast(client, text(`* ${name} joined`));
    }
    while (true) {
      const batch = await lines.readBatch(); // every whole line that has arrived
      if (batch === null) break; // the client is done (or Ctrl+C, or dropped)
      idle?.restart();
      const parts: Uint8Array[] = [];
      const now = performance.now();
      for (const line of batch) {
        const size = client.prefix.length + line.length + 1;
        if (!withinRate(client, size, now)) {
          log(`${client.name}: over --max-rate ${RATE} bytes/s, flooding, disconnected`);
          disconnect(client, FLOODING); // after the lines before this one are passed on
          break;
        }
        parts.push(client.prefix, line, NEWLINE);
        logRoom(`${client.name}: ${showBytes(line, LOG_PREVIEW)}`);
      }
      const chunk = concatBytes(parts); // a copy, shared by every queue: the reader reuses its buffer
      broadcast(client, chunk);
      await nextPoll(); // fairness: the others get their turn before we read this one again
      if (client.done) break;
    }
  } catch (err) {
    if (err instanceof LineTooLongError) send(client, LINE_TOO_LONG);
    if (!client.farewell) throw err; // serve() logs it in one line
  } finally {
    clearTimeout(nameTimer);
    leave(client);
    client.done = true;
    client.wake?.();
    await finish(client, writing);
    room.delete(client);
  }
}

/**
 * Lets a client take what it is still owed before `serve` closes the
 * connection: 1 s for one that leaves. One we disconnected gets up to 15 s to
 * take the end of its line and its ERR (a reader's writes can stall for
 * seconds while the kernel holds megabytes for it), then up to 1 s for the
 * ERR to travel, or until it closes its side.
 */
async function finish(client: Client, writing: Promise<boolean>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<boolean>((r) => {
    timer = setTimeout(r, client.farewell ? DROP_WAIT_MS : GRACE_MS, false);
  });
  const saidFarewell = await Promise.race([writing, limit]);
  clearTimeout(timer);
  if (saidFarewell) await Promise.race([pause(GRACE_MS, client.stop), endOfInput(client.conn)]);
}

/**
 * Resolves when the client closes its side, reading and throwing away what
 * it still sends (slowly: a flooder is not worth a busy loop).
 */
async function endOfInput(conn: Deno.Conn): Promise<void> {
  const scrap = new Uint8Array(16 * 1024);
  try {
    while ((await conn.read(scrap)) !== null) {
      await new Promise((r) => setTimeout(r, 10));
    }
  } catch {
    // reset, or closed by us
  }
}

/** Resolves after `ms`, or at once when `stop` aborts (Ctrl+C). */
function pause(ms: number, stop: StopSignal): Promise<void> {
  return new Promise((resolve) => {
    if (stop.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    stop.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/**
 * Serves one connection: the room's conversation (`chat`), with its errors
 * contained in one log line and the connection closed whatever happens.
 */
async function serve(conn: Deno.TcpConn): Promise<void> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn); // aborts at Ctrl+C
  // Closes a client that neither completes a line nor takes a byte for that long.
  const idle = closeWhenIdleFor(conn, secondsToMs(args["idle-timeout"]));
  try {
    await chat(conn, peer, stop, idle);
  } catch (err) {
    if (!stop.aborted) log(`${peer}: ${whyClientFailed(err, idle)}`); // one line, then the next client
  } finally {
    idle?.stop();
    clients.close(conn);
  }
}

await runMain(async () => {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: args.host, port: args.port });
  } catch (err) {
    throw await whyCannotListen(err, args.host, args.port); // names the address
  }
  stopOnSignal("chat_server", listener, clients, log); // Ctrl+C: stop, let replies finish, exit 0
  console.log(`listening on ${formatAddress(listener.addr)}`);

  while (true) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (await acceptAgain(err, log)) continue; // a client reset in the backlog: take the next
      break; // Ctrl+C closed the listener
    }
    if (args.trace) traceConn(conn, { print: logError }); // --trace: print every read and write on it
    conn.setNoDelay(true); // chat is interactive: each line goes out at once
    if (clients.size >= args["max-conns"]) {
      turnAway(conn, log); // ERR server busy, and close it
      continue;
    }
    serve(conn); // not awaited: every client is served at once
  }
});
