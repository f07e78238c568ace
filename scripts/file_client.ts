/**
 * file_client.ts — lesson 10's sender: sends each FILE to file_server.ts on
 * one connection, each as a length-prefixed header and then its bytes, and
 * checks the server's sha256 of what it stored against its own.
 *
 * Per file: `DataView.setUint32(0, H)` writes the header's length H as 4
 * bytes, big-endian (most significant first, whatever this machine's own
 * order); then the header, `{"name": "<file name>", "size": <bytes>}` in
 * UTF-8 JSON; then exactly `size` bytes, read from the disk 256 KiB at a
 * time and sent with `writeAll`, so a file of any size costs that much
 * memory. The server answers `OK <size> <sha256>` or `ERR <reason>`.
 *
 * The reply is read while the file is still going out, not after: a server
 * refuses a file that is too large or whose name is taken right after its
 * header, then closes. Had we waited until all of a big file was sent, we
 * would have met a closed connection instead of its reason. So an early
 * answer stops the sending, and we print the server's reason (escaped).
 *
 * It stops at the first file that fails and exits 1: an `ERR`, a sha256
 * that differs from ours, a file that changed size while being sent. The
 * files sent before it are stored. `--timeout` bounds the connect, each wait
 * for a reply, and a send that makes no progress. On a terminal, a progress
 * bar on stderr shows bytes per second; in a pipe, a line every 2 s.
 *
 * Run (start scripts/file_server.ts first):
 *   deno run --allow-net='127.0.0.1,[::1],localhost' --allow-read scripts/file_client.ts LICENSE
 *   deno task file_client LICENSE            (same thing)
 * Expected output:
 *   LICENSE: sent 931 bytes in 0.01 s (0.1 MB/s); the server stored it, sha256 matches
 *
 * @module
 */

import { createHash } from "node:crypto";
import { basename } from "node:path";
import { CliError, parseCli, runMain, secondsToMs, startHint, usageError } from "../lib/cli.ts";
import { ATTEMPTS_FLAG, connectWithRetry, reportAttempt } from "../lib/retry.ts";
import { LineReader, writeAll } from "../lib/io.ts";
import { formatAddress, showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";

const args = parseCli({
  name: "file_client",
  summary: "Sends files to file_server with a length prefix and checks each one's sha256.",
  operands: "FILE...",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "server to connect to" },
    port: { kind: "port", short: "p", default: 8891, help: "server's TCP port" },
    attempts: ATTEMPTS_FLAG,
    timeout: {
      kind: "seconds",
      default: 10,
      help: "each connect attempt, reply, and stalled send at most this long (0: never)",
    },
    trace: TRACE_FLAG,
  },
});
const paths = args.operands ?? [];
if (paths.length === 0) usageError("file_client", "give at least one FILE to send");

const CHUNK = 256 * 1024;
const encoder = new TextEncoder();
const target = formatAddress({ transport: "tcp", hostname: args.host, port: args.port });
const timeoutMs = secondsToMs(args.timeout);

interface Upload {
  path: string;
  name: string;
  size: number;
}

/** Shows how far a file has gone: a bar on a terminal, a line every 2 s otherwise. */
class Progress {
  readonly #start = performance.now();
  readonly #bar = Deno.stderr.isTerminal();
  #lastShown = this.#start;
  #bytes = 0;

  constructor(readonly upload: Upload) {}

  sent(bytes: number): void {
    this.#bytes = bytes;
    const now = performance.now();
    if (now - this.#lastShown < (this.#bar ? 100 : 2000)) return;
    this.#lastShown = now;
    const percent = Math.floor((100 * bytes) / this.upload.size);
    const where = `${percent}% of ${this.upload.size} bytes, ${this.rate()}`;
    if (!this.#bar) return console.error(`${this.upload.name}: ${where}`);
    const filled = Math.floor(percent / 5);
    Deno.stderr.writeSync(
      encoder.encode(`\r[${"#".repeat(filled)}${" ".repeat(20 - filled)}] ${where}\x1b[K`),
    );
  }

  done(): void {
    if (this.#bar && this.#lastShown !== this.#start) {
      Deno.stderr.writeSync(encoder.encode("\r\x1b[K"));
    }
  }

  seconds(): number {
    return (performance.now() - this.#start) / 1000;
  }

  rate(): string {
    return `${(this.#bytes / 1e6 / Math.max(this.seconds(), 0.001)).toFixed(1)} MB/s`;
  }
}

await runMain(async () => {
  const uploads: Upload[] = [];
  for (const path of paths) {
    const info = await Deno.stat(path).catch((err) => {
      throw err instanceof Deno.errors.NotFound ? new CliError(`no such file: ${path}`) : err;
    });
    if (!info.isFile) throw new CliError(`${path} is not a file`);
    uploads.push({ path, name: basename(path), size: info.size });
  }

  const conn = await connectWithRetry({
    connect: ({ signal }) => Deno.connect({ hostname: args.host, port: args.port, signal }),
    hostname: args.host,
    port: args.port,
    attempts: args.attempts,
    connectTimeoutMs: timeoutMs ?? 0,
    hint: startHint("file_server", args.port, 8891),
    onRetry: reportAttempt(args.attempts),
  });
  if (args.trace) traceConn(conn); // --trace: print every read and write on it
  const replies = new LineReader(conn, { maxLine: 1024, requireNewline: true });
  // A read cannot be cancelled: --timeout is a timer that closes the connection when nothing moves.
  let timedOut = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stillMoving = () => {
    clearTimeout(timer);
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        timedOut = true;
        conn.close();
      }, timeoutMs);
    }
  };
  try {
    for (const upload of uploads) await send(conn, upload, replies, stillMoving);
    await conn.closeWrite(); // done: the server sees the end of the stream, and closes
    stillMoving();
    const extra = await replies.readLine();
    if (extra !== null) throw new CliError(`unexpected reply '${showBytes(extra)}'`);
  } catch (err) {
    if (timedOut) {
      throw new CliError(`no progress with ${target} for ${args.timeout} s (--timeout)`);
    }
    throw err;
  } finally {
    clearTimeout(timer);
    if (!timedOut) conn.close();
  }
});

/** Sends one file and checks the server's answer; throws a CliError if it is not `OK`. */
async function send(
  conn: Deno.Conn,
  upload: Upload,
  replies: LineReader,
  stillMoving: () => void,
): Promise<void> {
  const header = encoder.encode(JSON.stringify({ name: upload.name, size: upload.size }));
  const prefix = new Uint8Array(4);
  new DataView(prefix.buffer).setUint32(0, header.length); // big-endian, as the wire says
  stillMoving();
  await writeAll(conn, prefix);
  await writeAll(conn, header);

  // The answer may come before we are done sending (a refusal): read it meanwhile.
  let answered = false;
  const reply = replies.readLine().then((line) => line && line.slice()); // (a view: copy it)
  reply.then(() => answered = true, () => answered = true);

  const hash = createHash("sha256");
  const progress = new Progress(upload);
  const file = await Deno.open(upload.path);
  try {
    const buffer = new Uint8Array(CHUNK);
    for (let left = upload.size; left > 0 && !answered;) {
      const n = await file.read(buffer.subarray(0, Math.min(left, CHUNK)));
      if (n === null) throw new CliError(`${upload.path} got shorter while being sent`);
      hash.update(buffer.subarray(0, n));
      await writeAll(conn, buffer.subarray(0, n), { restart: stillMoving });
      left -= n;
      progress.sent(upload.size - left);
    }
  } catch (err) {
    if (err instanceof CliError) throw err; // our file's fault: the connection is closed next
    // The connection broke: refused while we sent? Then the server's reason is what to say.
    if (!(await reply.catch(() => null))) throw err;
  } finally {
    file.close();
    progress.done();
  }

  stillMoving();
  const line = await reply;
  if (line === null) throw new CliError(`${target} closed the connection before answering`);
  const text = showBytes(line);
  const ok = /^OK (\d+) ([0-9a-f]{64})$/.exec(text);
  if (!ok) throw new CliError(`the server refused ${upload.name}: ${text.replace(/^ERR /, "")}`);
  const ours = hash.digest("hex");
  if (Number(ok[1]) !== upload.size || ok[2] !== ours) {
    throw new CliError(
      `${upload.name}: the server stored ${ok[1]} bytes with sha256 ${ok[2]}; ` +
        `we sent ${upload.size} with sha256 ${ours}`,
    );
  }
  console.log(
    `${upload.name}: sent ${upload.size} bytes in ${progress.seconds().toFixed(2)} s ` +
      `(${progress.rate()}); the server stored it, sha256 matches`,
  );
}
