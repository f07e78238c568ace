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
 * that differs from ours, a file that changed size while being sent (the
 * server keeps the first `size` bytes of one that grew). The
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
import {
  CliError,
  describeError,
  parseCli,
  runMain,
  secondsToMs,
  startHint,
  usageError,
} from "../lib/cli.ts";
import { ATTEMPTS_FLAG, connectWithRetry, reportAttempt } from "../lib/retry.ts";
import { LineReader, LineTooLongError, writeAll } from "../lib/io.ts";
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
/** A path or name as it is printed: escaped once (`showBytes`), however it is spelled. */
const shown = (text: string) => showBytes(encoder.encode(text));
const target = formatAddress({ transport: "tcp", hostname: args.host, port: args.port });
const timeoutMs = secondsToMs(args.timeout);

interface Upload {
  path: string;
  name: string;
  /** The name as printed: a file name may hold control bytes, too. */
  shown: string;
  size: number;
}

await runMain(async () => {
  const uploads: Upload[] = [];
  for (const path of paths) {
    const info = await Deno.stat(path).catch((err) => {
      throw err instanceof Deno.errors.NotFound
        ? new CliError(`no such file: ${shown(path)}`)
        : err;
    });
    if (!info.isFile) throw new CliError(`${shown(path)} is not a file`);
    const name = basename(path);
    uploads.push({ path, name, shown: shown(name), size: info.size });
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
  const restartTimeout = () => {
    clearTimeout(timer);
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        timedOut = true;
        conn.close();
      }, timeoutMs);
    }
  };
  try {
    for (const upload of uploads) await send(conn, upload, replies, restartTimeout);
    await conn.closeWrite(); // done: the server sees the end of the stream, and closes
    restartTimeout();
    const extra = await replies.readLine();
    if (extra !== null) throw new CliError(`unexpected reply '${showBytes(extra)}'`);
  } catch (err) {
    if (timedOut) {
      throw new CliError(`no progress with ${target} for ${args.timeout} s (--timeout)`);
    }
    if (err instanceof Deno.errors.BrokenPipe) {
      throw new CliError(`${target} closed the connection while we were still sending`);
    }
    if (err instanceof LineTooLongError) {
      throw new CliError(`a reply from ${target} is longer than 1024 bytes`);
    }
    throw err instanceof CliError ? err : new CliError(describeError(err, target));
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
  restartTimeout: () => void,
): Promise<void> {
  const header = encoder.encode(JSON.stringify({ name: upload.name, size: upload.size }));
  const prefix = new Uint8Array(4);
  new DataView(prefix.buffer).setUint32(0, header.length); // big-endian, as the wire says
  restartTimeout();
  await writeAll(conn, prefix);
  await writeAll(conn, header);

  // The answer may come before we are done sending (a refusal): read it meanwhile.
  let answered = false;
  // (readLine gives a view into the reader's buffer, which its next read reuses: copy it.)
  const reply = replies.readLine().then((line) => line && line.slice());
  reply.then(() => answered = true, () => answered = true);

  const hash = createHash("sha256");
  const progress = startProgress(upload);
  const file = await Deno.open(upload.path);
  let left = upload.size;
  let grew = false;
  try {
    const buffer = new Uint8Array(CHUNK);
    while (left > 0 && !answered) {
      const n = await file.read(buffer.subarray(0, Math.min(left, CHUNK)));
      if (n === null) throw new CliError(`${upload.shown} got shorter while being sent`);
      hash.update(buffer.subarray(0, n));
      await writeAll(conn, buffer.subarray(0, n), { restart: restartTimeout });
      left -= n;
      progress.sent(upload.size - left);
    }
    grew = left === 0 && (await file.read(new Uint8Array(1))) !== null;
  } catch (err) {
    if (err instanceof CliError) throw err; // our file's fault: the connection is closed next
    // The connection broke: refused while we sent? Then the server's reason is what to say.
    const reason = await reply.catch(() => null);
    if (reason === null) throw err; // no reason came: the failure itself is the news
  } finally {
    file.close();
    progress.done();
  }

  restartTimeout();
  const line = await reply;
  if (line === null) throw new CliError(`${target} closed the connection before answering`);
  const text = showBytes(line);
  if (text.startsWith("ERR ")) {
    throw new CliError(`the server refused ${upload.shown}: ${text.slice(4)}`);
  }
  const ok = /^OK (\d+) ([0-9a-f]{64})$/.exec(text);
  if (!ok || left > 0) {
    throw new CliError(`unexpected reply from ${target} to ${upload.shown}: '${text}'`);
  }
  const ours = hash.digest("hex");
  if (Number(ok[1]) !== upload.size || ok[2] !== ours) {
    throw new CliError(
      `${upload.shown}: the server stored ${ok[1]} bytes with sha256 ${ok[2]}; ` +
        `we sent ${upload.size} with sha256 ${ours}`,
    );
  }
  if (grew) {
    throw new CliError(
      `${upload.shown} grew while being sent: the server has its first ${upload.size} bytes`,
    );
  }
  console.log(
    `${upload.shown}: sent ${upload.size} bytes in ${progress.seconds().toFixed(2)} s ` +
      `(${progress.rate()}); the server stored it, sha256 matches`,
  );
}

/** Shows how far a file has gone: a bar on a terminal, a line every 2 s otherwise. */
function startProgress(upload: Upload) {
  const start = performance.now();
  const bar = Deno.stderr.isTerminal();
  let lastShown = start;
  let bytes = 0;
  const seconds = () => (performance.now() - start) / 1000;
  const rate = () => `${(bytes / 1e6 / Math.max(seconds(), 0.001)).toFixed(1)} MB/s`;
  return {
    seconds,
    rate,
    sent(total: number): void {
      bytes = total;
      const now = performance.now();
      if (now - lastShown < (bar ? 100 : 2000)) return;
      lastShown = now;
      const percent = Math.floor((100 * total) / upload.size);
      const where = `${percent}% of ${upload.size} bytes, ${rate()}`;
      if (!bar) return console.error(`${upload.shown}: ${where}`);
      const filled = Math.floor(percent / 5);
      const line = `\r[${"#".repeat(filled)}${" ".repeat(20 - filled)}] ${where}\x1b[K`;
      Deno.stderr.writeSync(encoder.encode(line));
    },
    done(): void {
      if (bar && lastShown !== start) Deno.stderr.writeSync(encoder.encode("\r\x1b[K"));
    },
  };
}
