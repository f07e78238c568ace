/**
 * Test plumbing: run a script as a real process the way its `deno task` does,
 * wait for what it prints, and talk to it over loopback.
 *
 * @module
 */

import { LineReader } from "../lib/io.ts";
import { writeAll } from "../lib/io.ts";
import { type Finished, ROOT, Running, taskCommand } from "../scripts/demo/processes.ts";

export { type Finished, Output, Running, taskCommand } from "../scripts/demo/processes.ts";

export const encoder = new TextEncoder();
export const decoder = new TextDecoder();

/** Every wait in a test is bounded by this unless it says otherwise. */
export const WAIT_MS = 15_000;
export { ROOT } from "../scripts/demo/processes.ts";

/** A server started from its task, once it printed `listening on HOST:PORT`. */
export interface Server extends Running {
  port: number;
  host: string;
}

/**
 * The ways a reader runs a script: as its task, as `deno run -A scripts/NAME.ts`
 * in the project (the first thing a reader tries), or the same from another
 * folder with the script's absolute path.
 */
export type Way = "task" | "run -A" | "run -A elsewhere";
export const WAYS: readonly Way[] = ["task", "run -A", "run -A elsewhere"];

/** The argv (after `deno`) and working folder that run script `name` the given way. */
export function scriptCommand(name: string, way: Way): { argv: string[]; cwd: string } {
  if (way === "task") return { argv: taskCommand(name), cwd: ROOT };
  if (way === "run -A") return { argv: ["run", "-A", `scripts/${name}.ts`], cwd: ROOT };
  elsewhere ??= Deno.makeTempDirSync({ prefix: "socket-examples-elsewhere-" }); // one per test run
  return { argv: ["run", "-A", `${ROOT}scripts/${name}.ts`], cwd: elsewhere };
}
let elsewhere: string | undefined;

/**
 * Starts server script `task` with `args` (default `--port 0`), as its task
 * unless `way` says otherwise, and waits until it listens.
 */
export async function startServer(
  task: string,
  args: string[] = ["--port", "0"],
  way: Way = "task",
): Promise<Server> {
  const { argv, cwd } = scriptCommand(task, way);
  const running = new Running([...argv, ...args], "null", cwd) as Server;
  try {
    const m = await running.stdout.waitFor(/listening on (\[[^\]]+\]|[^\s:]+):(\d+)/);
    running.host = m[1].replace(/^\[|\]$/g, "");
    running.port = Number(m[2]);
  } catch (err) {
    running.kill("SIGKILL");
    const done = await running.finished();
    throw new Error(`${task} did not start: ${(err as Error).message}\nstderr: ${done.stderr}`);
  }
  return running;
}

/** Runs `deno task NAME args` to the end, feeding `input` on stdin if given. */
export async function runTask(
  task: string,
  args: string[],
  input?: string | Uint8Array,
  timeoutMs = WAIT_MS,
): Promise<Finished> {
  const running = new Running(
    [...taskCommand(task), ...args],
    input === undefined ? "null" : "piped",
  );
  if (input !== undefined) {
    const w = running.child.stdin.getWriter();
    await w.write(typeof input === "string" ? encoder.encode(input) : input).catch(() => {});
    await w.close().catch(() => {});
  }
  return await running.finished(timeoutMs);
}

/** A port that nothing listens on (just freed). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** Reads a connection to its end and returns everything as bytes. */
export async function readAll(conn: Deno.Conn, timeoutMs = WAIT_MS): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  const deadline = Date.now() + timeoutMs;
  while (true) {
    if (Date.now() > deadline) throw new Error("readAll timed out");
    const n = await withTimeout(conn.read(buf), deadline - Date.now(), "readAll");
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Rejects with "WHAT: no result within MS ms" if `promise` takes longer than
 * `ms`, after calling `onTimeout` (give it a way to end the wait, such as
 * closing the connection a read waits on: a read cannot be cancelled, and a
 * read left pending is a leak the test sanitizers report). The timer is
 * cleared either way.
 */
export async function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  onTimeout?: () => void,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          onTimeout?.();
          reject(new Error(`${what}: no result within ${ms} ms`));
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Connects, sends `bytes` in chunks of `chunk` bytes, half-closes, returns all replies. */
export async function exchange(
  port: number,
  bytes: Uint8Array,
  chunk = 1 << 16,
): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const reading = readAll(conn);
    reading.catch(() => {}); // awaited below; don't let an early failure go unhandled
    for (let at = 0; at < bytes.length; at += chunk) {
      await writeAll(conn, bytes.subarray(at, at + chunk));
    }
    await conn.closeWrite();
    return await reading;
  } finally {
    conn.close();
  }
}

/**
 * Sends `bytes` to a server that may stop reading and close midway (a flood
 * it refuses), and returns what it replied before closing. Closing with
 * unread input makes the kernel reset the connection, which can fail our
 * writes; the reply sent before the reset can still be read.
 */
export async function floodAndRead(port: number, bytes: Uint8Array): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const chunks: Uint8Array[] = [];
  const reading = (async () => {
    const buf = new Uint8Array(64 * 1024);
    const deadline = Date.now() + WAIT_MS;
    while (Date.now() < deadline) {
      const n = await withTimeout(conn.read(buf), deadline - Date.now(), "floodAndRead");
      if (n === null) return;
      chunks.push(buf.slice(0, n));
    }
    throw new Error("floodAndRead timed out");
  })().catch((err) => {
    if (!(err instanceof Deno.errors.ConnectionReset)) throw err;
  });
  try {
    await writeAll(conn, bytes).then(() => conn.closeWrite()).catch((err) => {
      const reset = err instanceof Deno.errors.ConnectionReset ||
        err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.NotConnected;
      if (!reset) throw err;
    });
    await reading;
  } finally {
    conn.close();
  }
  return new Uint8Array(chunks.flatMap((c) => [...c]));
}

/**
 * A client that reads replies line by line. Each wait for a line is bounded
 * by `WAIT_MS`; past it the connection is closed and the wait fails.
 */
export class LineClient {
  readonly conn: Deno.TcpConn;
  readonly lines: LineReader;
  readonly #peer: string;
  #closed = false;
  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.lines = new LineReader(conn);
    this.#peer = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
  }
  static async connect(port: number, hostname = "127.0.0.1"): Promise<LineClient> {
    return new LineClient(await Deno.connect({ hostname, port }));
  }
  send(text: string | Uint8Array): Promise<void> {
    return writeAll(this.conn, typeof text === "string" ? encoder.encode(text) : text);
  }
  /** The next line's bytes (without `\n` or `\r\n`), or `null` at end of stream. */
  rawLine(): Promise<Uint8Array | null> {
    const what = `a line from ${this.#peer}`;
    return withTimeout(this.lines.readLine(), WAIT_MS, what, () => this.close());
  }
  /** The next line as text, or `null` at end of stream. */
  async line(): Promise<string | null> {
    const l = await this.rawLine();
    return l === null ? null : decoder.decode(l);
  }
  async ask(text: string): Promise<string | null> {
    await this.send(text + "\n");
    return await this.line();
  }
  /** Closes the connection (a read waiting on it fails); closing twice is harmless. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // closed through `conn` already
    }
  }
}

/** Asks one line of a fresh client and closes it. */
export async function askOnce(port: number, text: string): Promise<string | null> {
  const c = await LineClient.connect(port);
  try {
    return await c.ask(text);
  } finally {
    c.close();
  }
}

/** Whether a command exists on this machine (for peers such as nc, socat, python3). */
export function hasCommand(name: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Runs a shell pipeline (for `nc`, `python3` peers) and returns its stdout bytes. */
export async function sh(
  script: string,
  timeoutMs = WAIT_MS,
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  const child = new Deno.Command("sh", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  return { code: out.code, stdout: out.stdout, stderr: decoder.decode(out.stderr) };
}

/** Runs a Python snippet with `python3 -c`; `{PORT}` in it is replaced by `port`. */
export function python(
  code: string,
  port: number,
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  return sh(`python3 -c '${code.replaceAll("{PORT}", String(port)).replaceAll("'", "'\\''")}'`);
}

/**
 * A Deno peer (a stand-in server) on `hostname`: each connection is handed to
 * `talk`, up to `connections` of them. `done` resolves once every one has ended.
 */
export function denoPeer(
  talk: (conn: Deno.TcpConn, lines: LineReader) => Promise<void>,
  { hostname = "127.0.0.1", connections = 1 } = {},
): { port: string; done: Promise<void> } {
  const listener = Deno.listen({ hostname, port: 0 });
  const done = (async () => {
    try {
      for (let i = 0; i < connections; i++) {
        const conn = await listener.accept();
        try {
          await talk(conn, new LineReader(conn));
        } catch {
          // the client may leave first: only what it printed matters here
        } finally {
          try {
            conn.close();
          } catch { /* closed by talk */ }
        }
      }
    } finally {
      listener.close();
    }
  })();
  return { port: String(listener.addr.port), done };
}

/** A `denoPeer` talk that answers each line with `reply(line)` until the client leaves. */
export function answering(
  reply: (line: string) => Uint8Array | string,
): (conn: Deno.TcpConn, lines: LineReader) => Promise<void> {
  return async (conn, lines) => {
    for await (const line of lines) {
      const r = reply(decoder.decode(line));
      await writeAll(conn, typeof r === "string" ? encoder.encode(r) : r);
    }
  };
}
