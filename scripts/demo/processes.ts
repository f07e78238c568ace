/**
 * Running the collection's own scripts as child processes, the way their
 * `deno task` runs them, and waiting for what they print. Used by the tour
 * (scripts/demo.ts, `deno task demo`), the end-to-end tests and the bench;
 * not socket code, and not needed when you copy a lesson.
 *
 * @example
 * ```ts ignore
 * import { Running, taskCommand } from "./processes.ts";
 * const server = new Running([...taskCommand("socket_server"), "--port", "0"]);
 * const [, port] = await server.stdout.waitFor(/listening on .*:(\d+)/);
 * server.kill("SIGTERM");
 * console.log((await server.finished()).code); // 0
 * ```
 *
 * @module
 */

/** The project's root folder (where deno.json is). */
export const ROOT: string = new URL("../..", import.meta.url).pathname;

let tasks: Record<string, string | { command: string }> | undefined;

/**
 * The arguments after `deno` of task `name` in deno.json, e.g.
 * `["run", "--allow-net=127.0.0.1", "scripts/socket_server.ts"]`.
 */
export function taskCommand(name: string): string[] {
  tasks ??= JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).tasks;
  const task = tasks![name];
  if (!task) throw new Error(`no task ${name} in deno.json`);
  const argv = (typeof task === "string" ? task : task.command).split(/\s+/);
  if (argv[0] !== "deno") throw new Error(`task ${name} does not start with deno`);
  return argv.slice(1);
}

/** Collects a stream as text and lets callers wait for a pattern in it. */
export class Output {
  /** Everything read so far. */
  text = "";
  /** True once the stream ended. */
  closed = false;
  #waiters: (() => void)[] = [];
  #lineListeners: ((line: string) => void)[] = [];
  #linesSeen = 0; // how much of `text` has been handed out as whole lines
  /** Resolves when the stream has ended. */
  readonly done: Promise<void>;

  /** Starts reading `stream` in the background. */
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = this.#pump(stream);
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    for await (const chunk of stream) {
      this.text += dec.decode(chunk, { stream: true });
      this.#emitLines(false);
      this.#wake();
    }
    this.closed = true;
    this.#emitLines(true);
    this.#wake();
  }

  /**
   * Calls `listener` with each line as soon as it is whole (and with a last
   * unterminated one at the end), from the first line on.
   */
  onLine(listener: (line: string) => void): void {
    for (const line of splitLines(this.text.slice(0, this.#linesSeen))) listener(line);
    this.#lineListeners.push(listener);
  }

  #emitLines(atEnd: boolean): void {
    const end = atEnd ? this.text.length : this.text.lastIndexOf("\n") + 1;
    if (end <= this.#linesSeen) return;
    const lines = splitLines(this.text.slice(this.#linesSeen, end));
    this.#linesSeen = end;
    for (const line of lines) for (const listener of this.#lineListeners) listener(line);
  }

  #wake() {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves once `pattern` occurs `count` times; rejects on timeout or close. */
  async waitForCount(pattern: RegExp, count: number, timeoutMs = 15_000): Promise<void> {
    const global = new RegExp(
      pattern.source,
      pattern.flags.includes("g") ? pattern.flags : pattern.flags + "g",
    );
    const deadline = Date.now() + timeoutMs;
    while ((this.text.match(global)?.length ?? 0) < count) {
      const left = deadline - Date.now();
      if (this.closed || left <= 0) {
        throw new Error(
          `saw ${
            this.text.match(global)?.length ?? 0
          } of ${count} × ${pattern}; got:\n${this.text}`,
        );
      }
      await this.#changed(left);
    }
  }

  #changed(timeoutMs: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    return new Promise<void>((resolve) => {
      this.#waiters.push(resolve);
      timer = setTimeout(resolve, timeoutMs);
    }).finally(() => clearTimeout(timer));
  }

  /** Resolves with the first match of `pattern`; rejects on timeout or close. */
  async waitFor(pattern: RegExp | string, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const re = typeof pattern === "string"
      ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      : pattern;
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const m = this.text.match(re);
      if (m) return m;
      if (this.closed) throw new Error(`stream closed without ${re}; got:\n${this.text}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${re}; got:\n${this.text}`);
      await this.#changed(left);
    }
  }
}

/** `text` cut into lines, without the newline at the very end. */
function splitLines(text: string): string[] {
  return text === "" ? [] : text.replace(/\n$/, "").split("\n");
}

/** How a process ended, and all it printed. */
export interface Finished {
  /** Exit code. */
  code: number;
  /** The signal that killed it, if any. */
  signal: Deno.Signal | null;
  /** All of stdout. */
  stdout: string;
  /** All of stderr. */
  stderr: string;
  /** Milliseconds from start to exit. */
  ms: number;
}

/** A script running as a child process. */
export class Running {
  /** The child process. */
  readonly child: Deno.ChildProcess;
  /** Its standard output, as it arrives. */
  readonly stdout: Output;
  /** Its standard error, as it arrives. */
  readonly stderr: Output;
  /** When it was started (`performance.now()`). */
  readonly started: number = performance.now();
  #status: Promise<Deno.CommandStatus>;

  /**
   * Runs this Deno binary with `argv` (e.g. from {@linkcode taskCommand}) in
   * `cwd` (default: the project root).
   */
  constructor(argv: string[], stdin: "piped" | "null" = "null", cwd: string = ROOT) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: argv,
      cwd,
      stdin,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.stdout = new Output(this.child.stdout);
    this.stderr = new Output(this.child.stderr);
    this.#status = this.child.status;
  }

  /** Waits for the process to end (killing it after `timeoutMs`). */
  async finished(timeoutMs = 15_000): Promise<Finished> {
    const timer = setTimeout(() => this.kill("SIGKILL"), timeoutMs);
    const status = await this.#status;
    clearTimeout(timer);
    await Promise.all([this.stdout.done, this.stderr.done]);
    return {
      code: status.code,
      signal: status.signal,
      stdout: this.stdout.text,
      stderr: this.stderr.text,
      ms: performance.now() - this.started,
    };
  }

  /** Sends `signal`, ignoring a process that already exited. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.child.kill(signal);
    } catch {
      // already exited
    }
  }

  /** SIGTERM, then wait for the exit. */
  async stop(): Promise<Finished> {
    this.kill("SIGTERM");
    return await this.finished();
  }
}
