/**
 * chat_server.ts — a chat room: each client first gives a name, then every
 * line it sends goes to every other client as `name: line`; joins and leaves
 * are announced as `* alice joined` and `* alice left`.
 *
 * Names: the server asks `* name?`. A name is 1 to 32 bytes of UTF-8 with no
 * spaces or control characters, and unique; a bad or taken one gets one
 * `ERR ...` line and `* name?` again. Lines are passed on as the very bytes
 * that came (never decoded); only the log decodes them, control bytes escaped.
 * A line counts once its `\n` arrives: a client that leaves mid-line (reset,
 * crash, `printf 'x' | nc`) has its unfinished line sent to nobody.
 *
 * One thread, on purpose: a broadcast touches every connection, and a socket
 * cannot be handed to a worker, so workers would need a shared bus carrying
 * every line between them. One event loop reaches every socket directly.
 *
 * Slow readers are the hard part. Each client has its own queue of bytes owed
 * to it (`--max-queue`, 256 KiB, beyond what the kernel's socket buffers
 * hold) and its own writer loop draining it. A broadcast only appends to the
 * queues (one shared copy of the line) and never waits for a write, so a
 * client that stops reading cannot stall the room. A client whose queue would
 * overflow is dropped: it gets `ERR too slow, disconnected` if it still takes
 * bytes at all, and is hung up on within 1 s. Queues are first in, first out,
 * so each sender's lines reach everyone in the order sent. The price: nothing
 * slows a sender down, so a burst bigger than a queue and the socket buffers
 * (some 400 KB at once) can drop even a reader that keeps up; real chat
 * servers also limit how fast each client may send. `--max-line` is 1 KiB by
 * default, plenty for chat; `--idle-timeout` is off by default, as listening
 * quietly is normal.
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

import { lineServerFlags, parseCli, runMain } from "../lib/cli.ts";
import { type IdleClock, secondsToMs } from "../lib/deadline.ts";
import { LINE_TOO_LONG, LineTooLongError } from "../lib/errors.ts";
import { closeQuietly, concatBytes, nextTurn, writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";
import { type ClientContext, listen, TcpServer } from "../lib/server.ts";
import { formatAddress, LOG_PREVIEW, showBytes } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";

const flags = lineServerFlags(8890, 0);
const args = parseCli({
  name: "chat_server",
  summary: "A chat room: a name first, then every line goes to everyone else as 'name: line'.",
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
    "max-conns": { kind: "integer", min: 1, max: 100_000, default: 1000, help: "clients at once" },
    quiet: { kind: "boolean", help: "do not log lines, joins and leaves" },
  },
});

/** A connected client, named or not yet. */
interface Client {
  conn: Deno.Conn;
  name: string; // "" until it has chosen one
  prefix: Uint8Array; // `name: `
  queue: Uint8Array[]; // bytes owed to it, oldest first
  owed: number; // bytes in the queue and in the write in flight
  wake?: () => void; // its writer waits on this while the queue is empty
  done: boolean; // nothing more will be queued; the writer stops once the queue is empty
  dropped?: boolean; // too slow: then its read and write errors are ours, not news
}

const encoder = new TextEncoder();
const text = (s: string) => encoder.encode(`${s}\n`);
const NEWLINE = text("");
const ASK_NAME = text("* name?");
const BAD_NAME = text("ERR a name is 1 to 32 bytes of UTF-8, no spaces or control characters");
const TOO_SLOW = text("ERR too slow, disconnected");
const GRACE_MS = 1000; // how long a leaving client may take to receive what it is owed
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const clients = new Set<Client>();
const names = new Set<string>();
const log = args.quiet ? () => {} : (line: string) => console.log(line);
let server: TcpServer;

/** Queues bytes for one client, or drops it if its queue would overflow. Never waits. */
function send(client: Client, bytes: Uint8Array): void {
  if (client.done) return;
  if (client.owed + bytes.length > args["max-queue"]) {
    const who = client.name || formatAddress(client.conn.remoteAddr);
    console.log(`${who}: ${client.owed} bytes not taken, too slow, dropped`);
    client.dropped = client.done = true;
    client.queue = [TOO_SLOW]; // replaces what it was owed
    client.wake?.();
    queueMicrotask(() => leave(client)); // announced after the broadcast in progress
    setTimeout(() => closeQuietly(client.conn), GRACE_MS); // also ends its reader
    return;
  }
  client.queue.push(bytes);
  client.owed += bytes.length;
  client.wake?.();
}

/** The same bytes (one copy, shared by all queues) to every named client but `from`. */
function broadcast(from: Client | undefined, bytes: Uint8Array): void {
  for (const c of clients) if (c !== from && c.name) send(c, bytes);
}

function leave(client: Client): void {
  if (!names.delete(client.name)) return;
  log(`${client.name} left`);
  if (!server.signal.aborted) broadcast(client, text(`* ${client.name} left`));
}

/** Drains one client's queue; the only place that ever waits for this client. */
async function writer(client: Client, idle: IdleClock | undefined): Promise<void> {
  try {
    while (client.queue.length > 0 || !client.done) {
      if (client.queue.length === 0) {
        await new Promise<void>((resolve) => client.wake = resolve);
        client.wake = undefined;
        continue;
      }
      const batch = client.queue.length === 1 ? client.queue[0] : concatBytes(client.queue);
      client.queue = [];
      await writeAll(client.conn, batch, idle); // each byte taken restarts the idle clock
      client.owed -= batch.length;
    }
    if (client.dropped) closeQuietly(client.conn); // its ERR is out: hang up now
  } catch {
    client.done = true; // it went away; its reader finds out too
  }
}

/** The name a line asks for, or the `ERR` line refusing it. */
function checkName(bytes: Uint8Array): string | Uint8Array {
  let name: string;
  try {
    name = utf8.decode(bytes);
  } catch {
    return BAD_NAME;
  }
  if (bytes.length < 1 || bytes.length > 32 || /[\s\p{C}]/u.test(name)) return BAD_NAME;
  return names.has(name) ? text(`ERR the name ${name} is taken`) : name;
}

async function chat(conn: Deno.Conn, { peer, idle, signal }: ClientContext): Promise<void> {
  const client: Client = { conn, name: "", prefix: NEWLINE, queue: [], owed: 0, done: false };
  clients.add(client);
  const writing = writer(client, idle);
  // A line counts once its newline comes: what a client leaves unfinished goes to nobody.
  const lines = new LineReader(conn, {
    maxLine: args["max-line"],
    requireNewline: true,
    signal,
  });
  try {
    send(client, ASK_NAME);
    while (!client.name) {
      const line = await lines.readLine();
      if (line === null) {
        return log(
          `${peer} ${server.signal.aborted ? "closed at shutdown" : "left without a name"}`,
        );
      }
      idle?.restart();
      const name = checkName(line);
      if (typeof name !== "string") {
        log(`${peer}: name refused: ${showBytes(line, LOG_PREVIEW)}`);
        send(client, name);
        send(client, ASK_NAME);
        continue;
      }
      const others = [...names.values().take(20)]; // a short list, even in a crowd
      if (names.size > 20) others.push(`and ${names.size - 20} more`);
      client.name = name;
      client.prefix = encoder.encode(`${name}: `);
      names.add(name);
      log(`${name} (${peer}) joined`);
      const here = others.length ? `here: ${others.join(", ")}` : "nobody else is here";
      send(client, text(`* welcome ${name}; ${here}`));
      broadcast(client, text(`* ${name} joined`));
    }
    while (true) {
      const batch = await lines.readBatch(); // every whole line that has arrived
      if (batch === null) break; // the client is done (or Ctrl+C)
      idle?.restart();
      const parts: Uint8Array[] = [];
      for (const line of batch) {
        parts.push(client.prefix, line, NEWLINE);
        log(`${client.name}: ${showBytes(line, LOG_PREVIEW)}`);
      }
      const chunk = concatBytes(parts); // a copy, shared by every queue: the reader reuses its buffer
      broadcast(client, chunk);
      // A client that keeps its socket full is read at once, batch after
      // batch, without a return to the event loop: let the others in.
      if (chunk.length >= 4096) await nextTurn();
      if (client.done) break;
    }
  } catch (err) {
    if (err instanceof LineTooLongError) send(client, LINE_TOO_LONG);
    if (!client.dropped) throw err; // logged in one line by TcpServer
  } finally {
    leave(client);
    client.done = true;
    client.wake?.();
    // Let it take what it is still owed (its welcome, an ERR), but not wait long for it.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([writing, new Promise((r) => timer = setTimeout(r, GRACE_MS))]);
    clearTimeout(timer);
    clients.delete(client);
  }
}

await runMain(async () => {
  server = new TcpServer(await listen(args.host, args.port), {
    name: "chat_server",
    maxConns: args["max-conns"],
    idleTimeoutMs: secondsToMs(args["idle-timeout"]),
  });
  server.signal.addEventListener("abort", () => broadcast(undefined, text("* server closing")));
  for await (const conn of server.accept()) {
    if (args.trace) traceConn(conn); // --trace: print every read and write on it
    conn.setNoDelay(true); // chat is interactive: each line goes out at once
    // Not awaited: every client is served at once. The idle clock closes a
    // client that neither completes a line nor takes a byte for that long.
    server.handle(conn, (client) => chat(conn, client));
  }
});
