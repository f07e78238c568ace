/**
 * file_server.ts — lesson 10: messages that carry their length. Receives
 * files, many clients at once, and stores each in `--dir` (default
 * `received/`, created if missing).
 *
 * A line ends at `\n`, but a file may hold any byte, `\n` included: nothing
 * in its bytes can mark its end. So each message says first how long it is,
 * and the reader reads exactly that much (`readExact`). Per file, the client
 * sends:
 *   1. 4 bytes: the length H of the header, an unsigned number, big-endian
 *      (1 to 65,536);
 *   2. H bytes: UTF-8 JSON, `{"name": "notes.txt", "size": 1234}`;
 *   3. exactly `size` bytes: the file.
 * The server answers each file with one line: `OK <size> <sha256 hex>` once
 * the file is stored (the client compares the hash with its own), or
 * `ERR <reason>`, after which it closes. Several files may follow on one
 * connection; the client half-closes when done, and the server closes.
 *
 * Big-endian: the number 300 is the bytes 01 2C, most significant first, the
 * order of written digits ("network byte order"). A little-endian machine
 * (x86, and ARM as usually run) keeps it in memory as 2C 01. Both ends must agree on one
 * order or 300 arrives as 11,265; `DataView.getUint32(0)` reads big-endian
 * whatever the machine.
 *
 * What a server that writes files for strangers must not do, and how:
 * - write outside `--dir`: a name that is empty, `.`, `..`, or holds `/`,
 *   `\`, NUL or a control character is refused; other Unicode is fine;
 * - overwrite: a name taken is refused, checked after the header and again,
 *   atomically, when the file is stored (`Deno.link` fails on a taken name;
 *   `rename` would replace it);
 * - keep half a file: content goes to a temporary `.part-<uuid>` file in
 *   `--dir`, linked under its name only when complete and flushed to disk,
 *   and removed in every other case (a client that closes or resets
 *   mid-file, a deadline, Ctrl+C). Only a killed server leaves one behind;
 * - fill the disk or the memory: a file over `--max-size` is refused right
 *   after its header, before any content (the limit is per file: a client
 *   may send many); a file streams through one 256 KiB buffer, whatever its
 *   size, and at most `--max-conns` clients are served at once;
 * - wait forever: `--idle-timeout` drops a client that sends nothing for
 *   that long (any content bytes restart it; a header must all arrive within
 *   it). A
 *   client that sends a byte now and then keeps its place: what bounds such
 *   clients is `--max-conns`.
 * After an `ERR` the server reads and drops what the client is still sending
 * for up to 1 s before it closes: a simple client sends a whole file before
 * it reads a reply, and would otherwise fail with a broken pipe mid-send.
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' --allow-read --allow-write scripts/file_server.ts
 *   deno task file_server        (same thing; --allow-read=DIR --allow-write=DIR narrows it)
 *
 * Try it from a second terminal:
 *   $ deno task file_client LICENSE
 *   LICENSE: sent 931 bytes in 0.01 s (0.1 MB/s); the server stored it, sha256 matches
 * and the server prints:
 *   Client (127.0.0.1:PORT) connected
 *   127.0.0.1:PORT: stored 'LICENSE' (931 bytes)
 *   Client (127.0.0.1:PORT) is offline
 *
 * Or by hand, a file named hi.txt holding "hello\n" (a 26-byte header):
 *   $ printf '\0\0\0\032{"name":"hi.txt","size":6}hello\n' | nc -N 127.0.0.1 8891
 *   OK 6 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { beforeExit, CliError, parseCli, runMain, secondsToMs, usageError } from "../lib/cli.ts";
import { readExact, UnexpectedEofError, writeAll } from "../lib/io.ts";
import { log, logError } from "../lib/log.ts";
import {
  acceptAgain,
  closeWhenIdleFor,
  type IdleClock,
  OpenClients,
  stopOnSignal,
  turnAway,
  whyCannotListen,
  whyClientFailed,
} from "../lib/server.ts";
import { formatAddress, plural, showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";

const GiB = 1024 ** 3;
const args = parseCli({
  name: "file_server",
  summary: "Receives files sent with a length prefix (file_client) and stores them in --dir.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "address to listen on" },
    port: { kind: "port", short: "p", default: 8891, help: "TCP port, 0 for any free one" },
    dir: { kind: "string", default: "received", help: "folder the files go to (created)" },
    "max-size": { kind: "integer", default: GiB, max: 1024 * GiB, help: "largest file, in bytes" },
    "idle-timeout": {
      kind: "seconds",
      default: 30,
      help: "drop a client that sends nothing for this long (0: never)",
    },
    "max-conns": { kind: "integer", min: 1, max: 10_000, default: 100, help: "clients at once" },
    trace: TRACE_FLAG,
  },
});

if (!args.dir) usageError("file_server", "--dir needs a folder");
const MAX_HEADER = 65_536;
const CHUNK = 256 * 1024;
const encoder = new TextEncoder();
// Shutdown bookkeeping: which clients Ctrl+C lets finish, then closes; which temporary files
// are being written.
const clients = new OpenClients();
const unfinished = new Set<string>();
// A transfer that Ctrl+C cuts off may not have removed its file yet when the server exits.
beforeExit(() => Promise.all([...unfinished].map((path) => Deno.remove(path).catch(() => {}))));

/** A reason to answer `ERR <reason>` and hang up; `detail` is for our log only (paths). */
class Refusal extends Error {
  constructor(reason: string, readonly detail = reason) {
    super(reason);
  }
}

await runMain(async () => {
  await Deno.mkdir(args.dir, { recursive: true }).catch((err) => {
    throw err instanceof Deno.errors.AlreadyExists
      ? new CliError(`--dir ${args.dir}: not a folder`)
      : err;
  });
  const dir = await Deno.realPath(args.dir);
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: args.host, port: args.port });
  } catch (err) {
    throw await whyCannotListen(err, args.host, args.port); // names the address
  }
  stopOnSignal("file_server", listener, clients, log); // Ctrl+C: stop, let transfers end, exit 0
  console.log(`listening on ${formatAddress(listener.addr)}`);
  log(`storing files in ${dir}`);

  while (true) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (await acceptAgain(err, log)) continue; // a client reset in the backlog: take the next
      break; // Ctrl+C closed the listener
    }
    if (args.trace) traceConn(conn, { print: logError }); // --trace: every read and write on it
    if (clients.size >= args["max-conns"]) {
      turnAway(conn, log); // ERR server busy, and close it
      continue;
    }
    serve(conn); // not awaited: back to accept(); serve() catches its own errors
  }
});

/** Receives files from one client until it half-closes; answers each with a line. */
async function serve(conn: Deno.TcpConn): Promise<void> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn);
  const idle = closeWhenIdleFor(conn, secondsToMs(args["idle-timeout"]));
  let betweenFiles = true;
  // On Ctrl+C: hang up now if no file is under way; else let it finish (1.2 s at most).
  stop.addEventListener("abort", () => betweenFiles && conn.close(), { once: true });
  log(`Client (${peer}) connected`);
  try {
    while (true) {
      betweenFiles = true;
      const header = await readHeader(conn);
      if (header === null) break; // the client half-closed: it is done
      betweenFiles = false;
      idle?.restart();
      const hash = await receiveFile(conn, header, idle);
      log(`${peer}: stored ${showName(header.name)} (${plural(header.size, "byte")})`);
      await writeAll(conn, encoder.encode(`OK ${header.size} ${hash}\n`), idle);
    }
    log(`Client (${peer}) is offline`);
  } catch (err) {
    if (err instanceof Refusal) {
      log(`${peer}: refused: ${err.detail}`);
      await refuse(conn, err.message).catch(() => {});
    } else if (!stop.aborted) log(`${peer}: ${whyClientFailed(err, idle)}`);
  } finally {
    idle?.stop();
    clients.close(conn);
  }
}

/** The next file's header, checked; `null` if the stream ends before it starts. */
async function readHeader(conn: Deno.Conn): Promise<{ name: string; size: number } | null> {
  let prefix: Uint8Array;
  try {
    prefix = await readExact(conn, 4);
  } catch (err) {
    if (err instanceof UnexpectedEofError && err.received === 0) return null; // no next file
    throw err;
  }
  const length = new DataView(prefix.buffer).getUint32(0); // big-endian, whatever this machine
  if (length < 1 || length > MAX_HEADER) {
    throw new Refusal(`header length ${length}: it must be 1 to ${MAX_HEADER}`);
  }
  const bytes = await readExact(conn, length);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new Refusal("the header is not UTF-8 JSON");
  }
  const { name, size } = (header ?? {}) as { name?: unknown; size?: unknown }; // 5, [], null...
  if (
    typeof name !== "string" || typeof size !== "number" || !Number.isSafeInteger(size) || size < 0
  ) {
    throw new Refusal('the header must be {"name": "<file name>", "size": <bytes>}');
  }
  const badName = whyBadName(name);
  if (badName) throw new Refusal(badName);
  if (size > args["max-size"]) {
    throw new Refusal(`${size} bytes is over the limit of ${args["max-size"]} (--max-size)`);
  }
  if (await exists(join(args.dir, name))) throw new Refusal("a file of that name exists already");
  return { name, size };
}

/** Why `name` may not be a file name in --dir, or `undefined` if it may. */
function whyBadName(name: string): string | undefined {
  if (name === "" || name === "." || name === "..") return `'${name}' is not a file name`;
  if (/[/\\]/.test(name)) return "a file name may not contain / or \\";
  if (name.startsWith(".part-")) return "names that start with .part- are the server's own";
  if (/\p{Cc}/u.test(name)) return "a file name may not contain control characters";
  if (!name.isWellFormed()) return "the file name is not valid Unicode";
  if (encoder.encode(name).length > 255) return "the file name is longer than 255 bytes";
}

/**
 * Streams `header.size` bytes into a temporary file, then links it under its
 * name; returns the content's sha256. The temporary file never outlives it.
 */
async function receiveFile(
  conn: Deno.Conn,
  header: { name: string; size: number },
  idle: IdleClock | undefined,
): Promise<string> {
  const buffer = new Uint8Array(CHUNK); // per file, not per client: an idle one costs little
  const temporary = join(args.dir, `.part-${crypto.randomUUID()}`);
  const file = await Deno.open(temporary, { createNew: true, write: true }).catch(cannotStore);
  unfinished.add(temporary);
  const hash = createHash("sha256");
  try {
    for (let left = header.size; left > 0;) {
      const n = await conn.read(buffer.subarray(0, Math.min(left, buffer.length)));
      if (n === null) throw new UnexpectedEofError(header.size - left, header.size);
      idle?.restart(); // bytes came: this client is not idle
      hash.update(buffer.subarray(0, n));
      await writeAll(file, buffer.subarray(0, n)).catch(cannotStore); // may take part, as a socket
      left -= n;
    }
    await file.syncData().catch(cannotStore); // on the disk before we say OK
    file.close();
    await Deno.link(temporary, join(args.dir, header.name)).catch(cannotStore); // never replaces
  } finally {
    try {
      file.close();
    } catch { /* closed above */ }
    await Deno.remove(temporary).catch(() => {});
    unfinished.delete(temporary);
  }
  return hash.digest("hex");
}

/** `ERR <reason>`, then end our side, and drop what the client still sends for up to 1 s. */
async function refuse(conn: Deno.Conn, reason: string): Promise<void> {
  await writeAll(conn, encoder.encode(`ERR ${reason}\n`));
  await conn.closeWrite();
  const timer = setTimeout(() => conn.close(), 1000);
  try {
    const sink = new Uint8Array(CHUNK);
    while (await conn.read(sink) !== null) { /* drop it */ }
  } finally {
    clearTimeout(timer);
  }
}

/** A failure to store a file, for the client: the name taken, the disk full... */
function cannotStore(err: unknown): never {
  if (err instanceof Deno.errors.AlreadyExists) {
    throw new Refusal("a file of that name exists already");
  }
  // "No space left on device (os error 28): open '/home/...'": the client gets no path of ours.
  const message = (err as Error).message.split("\n")[0];
  const why = message.match(/^.*?\(os error \d+\)/)?.[0] ?? "see the server's log";
  throw new Refusal(`cannot store the file: ${why}`, `cannot store the file: ${message}`);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    cannotStore(err); // --dir is gone, or unreadable
  }
}

/** A client's file name as a log line may show it: quoted, anything invisible escaped. */
function showName(name: string): string {
  return `'${showBytes(encoder.encode(name))}'`;
}
