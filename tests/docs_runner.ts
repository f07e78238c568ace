/**
 * The how of `docs_test.ts`: reads the commands a text shows (a script's top comment, a ```sh
 * block of a markdown file), runs them, and checks what they print against the text. The rules
 * these functions follow, the grammar of the texts, are written at the top of `docs_test.ts`;
 * that file lists what is checked.
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { freePort, Output, ROOT, Running, taskCommand, WAIT_MS } from "./helpers.ts";

const DENO_DIR = dirname(Deno.execPath());
/** The environment the commands run with: no colours, and this Deno first on the PATH. */
export const ENV = { NO_COLOR: "1", PATH: `${DENO_DIR}:${Deno.env.get("PATH") ?? ""}` };
/** How long terminal 1 gets to print what a markdown file shows, or to exit. */
const SHOW_MS = 10_000;

/** A command of a top comment's recipe, with what it prints and what the server prints meanwhile. */
export interface Step {
  command: string;
  expect: string[];
  serverExpect: string[];
  background: boolean; // a server left running while the next command runs
}

/** What a script's top comment says: its Run lines, their output, and its recipes. */
export interface ScriptDoc {
  name: string;
  runLine: string;
  taskLine: string;
  companion?: string; // the script to start first (`Run (start scripts/X.ts first):`)
  expect: string[];
  online: boolean; // the run lines need the Internet
  recipes: Step[];
}

/** The top comment of a script, without its ` * ` margins. */
export function topComment(name: string): string[] {
  const text = Deno.readTextFileSync(`${ROOT}/scripts/${name}.ts`);
  const body = text.slice(text.indexOf("/**") + 3, text.indexOf("*/"));
  return body.split("\n").map((l) => l.replace(/^\s*\* ?/, ""));
}

/** Reads the top comment of `scripts/<name>.ts` (see the top of docs_test.ts). */
export function parseScript(name: string): ScriptDoc {
  const lines = topComment(name);
  const doc: ScriptDoc = {
    name,
    runLine: "",
    taskLine: "",
    expect: [],
    online: false,
    recipes: [],
  };
  let header = "";
  for (let i = 0; i < lines.length;) {
    if (!lines[i].startsWith("  ")) {
      if (lines[i].trim()) header = lines[i].trim();
      i++;
      continue;
    }
    const block: string[] = [];
    while (i < lines.length && lines[i].startsWith("  ")) block.push(lines[i++].trim());
    if (header.startsWith("Run")) {
      doc.runLine = block.find((l) => l.startsWith("deno run "))!;
      doc.taskLine = block.find((l) => l.startsWith("deno task "))!.replace(/\s+\(.*\)$/, "");
      doc.companion = header.match(/start scripts\/(\w+)\.ts first/)?.[1];
    } else if (header.startsWith("Expected output")) {
      doc.expect = block;
      doc.online = header.includes("Internet");
    } else if (/(server|proxy) prints/.test(header) && !block[0].startsWith("$ ")) {
      doc.recipes.at(-1)!.serverExpect = block;
    } else if (block[0].startsWith("$ ")) {
      for (let j = 0; j < block.length; j++) {
        const step: Step = {
          command: block[j].slice(2),
          expect: [],
          serverExpect: [],
          background: false,
        };
        while (j + 1 < block.length && !block[j + 1].startsWith("$ ")) step.expect.push(block[++j]);
        step.background = step.expect.length === 0 && j + 1 < block.length;
        doc.recipes.push(step);
      }
    }
  }
  assert.ok(doc.runLine, `${name}: no 'deno run' line under 'Run:'`);
  assert.ok(doc.taskLine, `${name}: no 'deno task' line under 'Run:'`);
  return doc;
}

/** A regex source for one expected line, with the wildcards of docs_test.ts's header (no line end). */
function linePattern(line: string): string {
  const token = /(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+|\d+\.\d+|PORT|\bN\b)/;
  return line.trimEnd().split(token).map((piece, k) => {
    if (k % 2 === 0) {
      return piece.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/ {2,}/g, "[ \\t]+");
    }
    if (piece === "PORT" || piece === "N") return "\\d+";
    if (piece.includes(":")) return "\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d+";
    return "\\d+\\.\\d+";
  }).join("");
}

/** A regex for expected output lines: all of them, in order, one after the other. */
export function expectation(lines: string[]): RegExp {
  const parts = lines.map((line) =>
    line === "..." ? "(?:[^\\n]*\\n)*?" : `${linePattern(line)}[ \\t\\r]*\\n`
  );
  return new RegExp(`(?:^|\\n)${parts.join("")}`);
}

/**
 * Whether `lines` were printed: all in stdout, all in stderr, or split between the two, each line
 * in the stream that has it (stdout if both do) and each stream's share in order there.
 */
export function shown(lines: string[], stdout: string, stderr: string): boolean {
  const re = expectation(lines);
  if (re.test(stdout) || re.test(stderr)) return true;
  const inStdout = (line: string) =>
    new RegExp(`(?:^|\\n)${linePattern(line)}[ \\t\\r]*(?:\\n|$)`).test(stdout);
  const outLines = lines.filter((l) => l === "..." || inStdout(l));
  const errLines = lines.filter((l) => l === "..." || !inStdout(l));
  return expectation(outLines).test(stdout) && expectation(errLines).test(stderr);
}

/** argv (after `deno`) for a `deno run` or `deno task` line, as `deno task` would run it. */
export function denoArgv(command: string): string[] {
  // Single quotes are the shell's (they keep zsh from globbing `[::1]`), not the argument's.
  const words = command.split(/\s+/).map((w) => w.replaceAll("'", ""));
  assert.equal(words[0], "deno", command);
  if (words[1] === "task") return [...taskCommand(words[2]), ...words.slice(3)];
  return words.slice(1);
}

/** Sends `signal` to `child`, ignoring one that already exited. */
function signal(child: Deno.ChildProcess, sig: Deno.Signal) {
  try {
    child.kill(sig);
  } catch {
    // exited
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs a shell command as a reader would type it; returns its output. */
export async function shell(command: string) {
  const child = new Deno.Command("sh", {
    args: ["-c", command],
    cwd: ROOT,
    env: ENV,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => signal(child, "SIGKILL"), WAIT_MS * 2);
  const out = await child.output();
  clearTimeout(timer);
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Runs Deno with `argv`, with `DENO_DIR` set to `denoDir` if given. */
function runDeno(argv: string[], denoDir?: string): Running {
  if (!denoDir) return new Running(argv);
  const old = Deno.env.get("DENO_DIR");
  Deno.env.set("DENO_DIR", denoDir); // the child takes its environment when it starts
  try {
    return new Running(argv);
  } finally {
    if (old === undefined) Deno.env.delete("DENO_DIR");
    else Deno.env.set("DENO_DIR", old);
  }
}

/** A process started from a doc line that stays up while the next lines run. */
export interface Background {
  /** What it prints to stdout, and to stderr, as it comes. */
  out: Output;
  err: Output;
  /** The port it listens on. */
  port: number;
  /** Its exit status, once it exited (by itself, or by `stop`). */
  status: () => Deno.CommandStatus | undefined;
  /** Waits at most `ms` for it to exit by itself; whether it did. */
  waitExit: (ms: number) => Promise<boolean>;
  /** Ends it (SIGTERM) if it is still running, and waits until it has. */
  stop: () => Promise<void>;
}

/** Tracks `child`'s exit for a `Background`. */
function exitOf(status: Promise<Deno.CommandStatus>) {
  let ended: Deno.CommandStatus | undefined;
  const exited = status.then((s) => (ended = s));
  return {
    status: () => ended,
    waitExit: async (ms: number) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, ms)))]);
      clearTimeout(timer);
      return ended !== undefined;
    },
  };
}

/** A background process from a doc line: one of our servers, or another (`python3 -m http.server`). */
export async function startBackground(command: string): Promise<Background> {
  if (command.startsWith("deno ")) {
    // Deno caches a script run by URL and does not fetch it again: such a run gets a cache of
    // its own, as on a reader's first run, so that today's files are the ones that run.
    const cache = /\shttps?:\/\//.test(command)
      ? Deno.makeTempDirSync({ prefix: "docs-url-cache-" })
      : undefined;
    const dropCache = () => cache && Deno.removeSync(cache, { recursive: true });
    const server = runDeno(denoArgv(command), cache);
    const m = await server.stdout.waitFor(/listening on \S+:(\d+)/).catch(async (err) => {
      server.kill("SIGKILL");
      await server.finished();
      dropCache();
      return new Error(
        `'${command}' did not start: ${(await server.finished()).stderr || err.message}`,
      );
    });
    if (m instanceof Error) throw m;
    return {
      out: server.stdout,
      err: server.stderr,
      port: Number(m[1]),
      ...exitOf(server.child.status),
      stop: async () => {
        await server.stop();
        dropCache();
      },
    };
  }
  const child = new Deno.Command("sh", {
    args: ["-c", `exec ${command}`],
    cwd: ROOT, // as a reader runs it: a web server in the project serves the project
    env: ENV,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  const out = new Output(child.stdout);
  const err = new Output(child.stderr);
  const port = Number(command.match(/\b(\d{4,5})\b/)![1]);
  for (let i = 0; i < 200; i++) {
    const probe = await Deno.connect({ hostname: "127.0.0.1", port }).catch(() => null);
    if (probe) {
      probe.close();
      break;
    }
    await sleep(50);
  }
  return {
    out,
    err,
    port,
    ...exitOf(child.status),
    stop: async () => {
      signal(child, "SIGTERM");
      const timer = setTimeout(() => signal(child, "SIGKILL"), WAIT_MS);
      await child.status;
      clearTimeout(timer);
      await Promise.all([out.done, err.done]);
    },
  };
}

/**
 * Ports a command names (`127.0.0.1 8888`, `localhost:8888`, `--port 8888`, tcpdump's
 * `port 8888`, ss's `sport = :8888`); not a web address's (`http://127.0.0.1:8000/scripts/x.ts`
 * is where the script comes from).
 */
export function portsIn(command: string): number[] {
  const named =
    /(?:(?<!\/\/)(?:127\.0\.0\.1|localhost)[ :]|--port |-p |(?<![\w-])port |[sd]port = :)(\d+)/g;
  return [...command.matchAll(named)].map((m) => Number(m[1]));
}

/**
 * Every port a text names: `portsIn`'s, and those of a web address (`http://127.0.0.1:8000/...`),
 * of Python (`("127.0.0.1", 8888)`, `port=8000`, `http.server 8000`). Port 0 (any free one) is no
 * fixed port.
 */
export function portsNamed(text: string): number[] {
  const more =
    /(?:(?:127\.0\.0\.1|localhost|\[::1\]):|"127\.0\.0\.1", |\bport=|http\.server )(\d+)/g;
  const all = [...portsIn(text), ...[...text.matchAll(more)].map((m) => Number(m[1]))];
  return [...new Set(all)].filter((p) => p > 0);
}

/**
 * The port each script uses when no `--port` is given (`socket_server` 8888, `naive/ok_server`
 * 8888, ...), read from its source: `lineServerFlags(8888, ...)` or a `kind: "port"` flag's
 * `default`. Scripts that ask for their port (tcp_server, tcp_client) have none.
 */
export function defaultPorts(): Map<string, number> {
  const ports = new Map<string, number>();
  for (const dir of ["scripts", "naive"]) {
    for (const entry of Deno.readDirSync(`${ROOT}/${dir}`)) {
      if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
      const src = Deno.readTextFileSync(`${ROOT}/${dir}/${entry.name}`);
      const m = src.match(/lineServerFlags\((\d+)/) ??
        src.match(/kind: "port"[^}]*?\bdefault: (\d+)/);
      const name = entry.name.replace(/\.ts$/, "");
      if (m) ports.set(dir === "scripts" ? name : `${dir}/${name}`, Number(m[1]));
    }
  }
  return ports;
}

/** The markdown files whose ```sh blocks `docs_test.ts` runs. */
export const DOCS: string[] = ["README.md", "LESSONS.md", "CONTRIBUTING.md", "bench/README.md"];

/**
 * The fixed ports the docs rely on: every script's default (1024 and up: 80 is the Internet's)
 * and every port the markdown files (`DOCS`) and the scripts' top comments name. `docs_test.ts`
 * holds those that are free while it runs, so that a command still run on one of them fails.
 */
export function fixedPorts(): number[] {
  const texts = DOCS.map((doc) => Deno.readTextFileSync(`${ROOT}/${doc}`));
  for (const entry of Deno.readDirSync(`${ROOT}/scripts`)) {
    if (entry.isFile && entry.name.endsWith(".ts")) {
      texts.push(topComment(entry.name.replace(/\.ts$/, "")).join("\n"));
    }
  }
  const ports = new Set([...defaultPorts().values()]);
  for (const text of texts) for (const p of portsNamed(text)) ports.add(p);
  return [...ports].filter((p) => p >= 1024).sort((a, b) => a - b);
}

/** The offsets [start, end) of the parts of a shell command between unquoted `|;&()<>`. */
function shellSegments(command: string): [number, number][] {
  const parts: [number, number][] = [];
  let [start, quote] = [0, ""];
  for (let i = 0; i < command.length; i++) {
    const ch = command[i];
    if (quote) {
      if (ch === quote) quote = "";
    } else if (ch === "'" || ch === '"') {
      quote = ch;
    } else if ("|;&()<>".includes(ch)) {
      parts.push([start, i]);
      start = i + 1;
    }
  }
  parts.push([start, command.length]);
  return parts;
}

/**
 * The docs name fixed ports (8888, 50000, ...), and a reader may have a server on any of them
 * (the README invites it), so a block is run on free ports instead: each port the block names is
 * moved to a free one, the same one all through the block (its commands and the output they
 * must print), and a `deno` command of ours that names no port, relying on its default, is given
 * `--port` with that default's free port (and each file_server, `--dir` with a fresh folder).
 * One map per ```sh block, or per top comment.
 */
let filesRoot: string | undefined;
/** A fresh folder for a block's file_server to store files in; all are removed at the run's end. */
function freshFilesDir(): string {
  if (filesRoot === undefined) {
    const root = filesRoot = Deno.makeTempDirSync({ prefix: "docs-test-files-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(root, { recursive: true }));
  }
  return Deno.makeTempDirSync({ dir: filesRoot });
}

export class PortMap {
  readonly #real = new Map<number, number>();
  readonly #defaults = defaultPorts();

  /** The free port that stands for `port` (the same one every time). */
  real(port: number): number {
    let real = this.#real.get(port);
    if (real === undefined) {
      const taken = new Set(this.#real.values());
      for (let i = 0; i < 20 && (real === undefined || taken.has(real)); i++) real = freePort();
      this.#real.set(port, real!);
    }
    return real!;
  }

  /** The port a text named for `real` (itself if it stands for none). */
  docPort(real: number): number {
    for (const [doc, r] of this.#real) if (r === real) return doc;
    return real;
  }

  /** `text` with every port this map moved replaced by its free port. */
  #replace(text: string): string {
    if (this.#real.size === 0) return text;
    const any = new RegExp(`(?<![\\d.])(${[...this.#real.keys()].join("|")})(?!\\.?\\d)`, "g");
    return text.replace(any, (p) => String(this.#real.get(Number(p))));
  }

  /** `command` as run: on free ports, with `--port` where it relied on a default. */
  command(command: string): string {
    for (const port of portsNamed(command)) this.real(port);
    const moved = this.#replace(command);
    let out = "";
    let at = 0;
    for (const [start, end] of shellSegments(moved)) {
      const part = moved.slice(start, end);
      const task = part.match(/\bdeno\s+task\s+([\w:-]+)/);
      const file = /\bdeno\s+run\s/.test(part)
        ? part.match(/(?:^|[\s/])(scripts|naive)\/(\w+)\.ts\b/)
        : null;
      const name = task?.[1] ?? (file && (file[1] === "naive" ? `naive/${file[2]}` : file[2]));
      const port = name ? this.#defaults.get(name) : undefined;
      let add = "";
      // Not one that asks for its port, or the Internet's.
      const hasPort = /(?:^|\s)(?:--port|-p)(?:[=\s]|$)/.test(part);
      if (!hasPort && port !== undefined && port >= 1024) add += ` --port ${this.real(port)}`;
      // A file_server stores into received/ in the project, where the next would find its files.
      if (name === "file_server" && !/\s--dir\b/.test(part)) {
        add += ` --dir ${freshFilesDir()}`;
      }
      if (!add) continue;
      const m = (task ?? file)!;
      const after = start + m.index! + m[0].length;
      out += moved.slice(at, after) + add;
      at = after;
    }
    return out + moved.slice(at);
  }

  /** Expected output lines with the ports this map moved replaced. */
  lines(lines: string[]): string[] {
    return lines.map((line) => this.#replace(line));
  }
}

/** The names of what `lib/*.ts` exports as values (functions, classes, constants). */
export function libExports(): Set<string> {
  const names = new Set<string>();
  for (const entry of Deno.readDirSync(`${ROOT}/lib`)) {
    if (!entry.name.endsWith(".ts")) continue;
    const src = Deno.readTextFileSync(`${ROOT}/lib/${entry.name}`);
    const declared =
      /^export\s+(?:async\s+)?(?:function\*?|class|const|let)\s+([A-Za-z_$][\w$]*)/gm;
    for (const m of src.matchAll(declared)) names.add(m[1]);
    for (const m of src.matchAll(/^export\s*\{([^}]*)\}/gm)) {
      for (const part of m[1].split(",").map((p) => p.trim())) {
        if (part && !part.startsWith("type ")) names.add(part.split(/\s+as\s+/).at(-1)!);
      }
    }
  }
  return names;
}

/** Methods of a `Deno.Conn` or `Deno.Listener`: a bare `read()` in a comment is one of them. */
const SOCKET_METHODS = [
  "read",
  "write",
  "accept",
  "close",
  "closeWrite",
  "setNoDelay",
  "setKeepAlive",
];

/**
 * The calls a script's top comment claims, each with the text the code below the
 * comment must contain. A claim is a backticked name (`await ` and arguments
 * dropped: `conn.read()` is `conn.read`) that is:
 * - `Deno.x...` with `x` lower case (a function, not a type like `Deno.Conn`): the name as written;
 * - exported by `lib/*.ts`, or `Name.member` of one: `Name`, and `.member`;
 * - `conn.x` or `listener.x` (the collection's names for a Deno socket): the name as written;
 * - a bare `read()`, `accept()`, ... (a socket method, with its parentheses): `.read(`;
 * - `new X(...)`: `new X`;
 * - any other lowerCamelCase name (`readExact`, `reusePort`, a lib name since removed): the name.
 * Other backticked text (flags, output, the seeds' Python like `recv(1024)`) claims nothing.
 * "Contains" means as a whole word, outside comments.
 */
export function namedCalls(
  comment: string,
  lib: Set<string>,
): { token: string; needs: string[] }[] {
  const claims: { token: string; needs: string[] }[] = [];
  for (const [, token] of comment.matchAll(/`([^`]+)`/g)) {
    let t = token.replace(/^await\s+/, "");
    const isNew = /^new\s+/.test(t);
    t = t.replace(/^new\s+/, "");
    const call = t.match(/^([^(]+)\((.*)\)$/);
    const name = call ? call[1] : t;
    if (!/^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*$/.test(name)) continue;
    const [head, ...rest] = name.split(".");
    let needs: string[] | undefined;
    if (isNew) needs = [`new ${name}`];
    else if (head === "Deno") needs = /^[a-z]/.test(rest[0] ?? "") ? [name] : undefined;
    else if (lib.has(head)) needs = [head, ...rest.map((r) => `.${r}`)];
    else if (head === "conn" || head === "listener") needs = rest.length ? [name] : undefined;
    else if (!rest.length && call && SOCKET_METHODS.includes(head)) needs = [`.${head}(`];
    else if (/^[a-z][a-z0-9]*[A-Z]/.test(head)) needs = [head, ...rest.map((r) => `.${r}`)];
    if (needs) claims.push({ token, needs });
  }
  return claims;
}

/** `code` without its comments (block comments, whole-line and trailing `// ...` ones). */
export function withoutComments(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\//g, "")
    .split("\n")
    .map((line) => line.replace(/^\s*\/\/.*$/, "").replace(/\s\/\/\s.*$/, ""))
    .join("\n");
}

/** Whether `code` holds `text` with no identifier character glued to either end. */
export function containsWord(code: string, text: string): boolean {
  const escaped = text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const start = /^[\w$]/.test(text) ? "(?<![\\w$])" : "";
  const end = /[\w$]$/.test(text) ? "(?![\\w$])" : "";
  return new RegExp(`${start}${escaped}${end}`).test(code);
}

/** Whether a script is a server (it is started in the background, not run to its end). */
const IS_SERVER = (name: string) => /_server|_proxy/.test(name); // a proxy is a server too
const installedTools = new Map<string, boolean>();
/** Whether `cmd` is installed (asked once per tool). */
const HAS = (cmd: string) => {
  if (!installedTools.has(cmd)) {
    const probe = new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" });
    installedTools.set(cmd, probe.outputSync().success);
  }
  return installedTools.get(cmd)!;
};

/** Where a run writes what it ran and what it did not (and why). */
export interface RunLog {
  executed: string[];
  notExecuted: string[];
}

/**
 * Runs the commands of a script's top comment (`doc`, from `parseScript`): its Run lines, then
 * its recipes, each with the server (its own, or the companion it names) started fresh, and
 * checks what they print. Commands not run are logged with why; the ports they name are still
 * checked against the server's real one. All of it runs on free ports (`PortMap`).
 */
export async function runScriptDoc(doc: ScriptDoc, log: RunLog): Promise<void> {
  const { name } = doc;
  const companion = doc.companion ? parseScript(doc.companion) : undefined;
  const server = IS_SERVER(name) ? doc : companion;
  const ports = new PortMap();
  const startServer = () => startBackground(ports.command(server!.runLine));

  /** Runs `step` with the server (if any) started fresh from its own comment, and checks both outputs. */
  const runStep = async (step: Step, background?: { stop: () => Promise<void> }) => {
    const started = server ? await startServer() : undefined;
    try {
      const command = ports.command(step.command);
      const r = await shell(command);
      log.executed.push(`${name}: ${step.command}`);
      assert.equal(r.code, 0, `${name}: '${command}' exited ${r.code}\n${r.stdout}${r.stderr}`);
      if (step.expect.length) {
        assert.match(
          r.stdout,
          expectation(ports.lines(step.expect)),
          `${name}: '${command}' printed:\n${r.stdout}`,
        );
      }
      if (step.serverExpect.length) {
        await started!.out.waitFor(expectation(ports.lines(step.serverExpect)));
      }
    } finally {
      await started?.stop();
      await background?.stop();
    }
  };

  // The Run lines themselves.
  if (doc.online) {
    log.notExecuted.push(`${name}: ${doc.runLine} (needs the Internet)`);
  } else if (IS_SERVER(name)) {
    for (const line of [doc.runLine, doc.taskLine]) {
      const started = await startBackground(ports.command(line));
      log.executed.push(`${name}: ${line}`);
      await started.stop();
    }
  } else {
    for (const line of [doc.runLine, doc.taskLine]) {
      await runStep({ command: line, expect: doc.expect, serverExpect: [], background: false });
    }
  }

  // The recipes.
  let background: Awaited<ReturnType<typeof startBackground>> | undefined;
  for (const step of doc.recipes) {
    const interactive = step.expect.length === 0 && step.serverExpect.length === 0 &&
      !step.background;
    const needs = step.command.match(/\b(nc|python3|curl)\b/)?.[1];
    if (interactive || / -l /.test(step.command) || (needs && !HAS(needs))) {
      const why = / -l /.test(step.command)
        ? "nc plays the server; the end-to-end tests run that pairing"
        : interactive
        ? "typed into by hand"
        : `${needs} is not installed`;
      log.notExecuted.push(`${name}: ${step.command} (${why})`);
      // Still true: the port it names is the one the server really uses.
      if (server && !server.online) {
        const s = await startServer();
        await s.stop();
        for (const port of portsIn(ports.command(step.command))) {
          assert.equal(ports.docPort(port), ports.docPort(s.port), `${name}: '${step.command}'`);
        }
      }
      continue;
    }
    if (step.background) {
      background = await startBackground(ports.command(step.command));
      log.executed.push(`${name}: ${step.command} (in the background)`);
      continue;
    }
    await runStep(step, background);
    background = undefined;
  }
}

/** A command of a ```sh block in a markdown file, with what the `#` lines under it say. */
export interface DocCommand {
  /** Its line in the file (from 1), for messages. */
  line: number;
  command: string;
  /** The text after ` # ` on its line (`terminal 1`, `terminal 2 prints:`). */
  note: string;
  /** The exit code it must end with (`# exit N` first under it; 0 if none). */
  exit: number;
  /** What it prints. */
  expect: string[];
  /** What terminal 1 prints meanwhile (the lines after `# terminal 1 shows:`), if said. */
  shows?: string[];
  /** 2 when `shows` are terminal 2's lines (`# terminal 2 shows:`); else terminal 1's. */
  showsIn?: number;
  /** Whether terminal 1 ends by itself (`# terminal 1 exits`). */
  ends: boolean;
}

/** The ```sh blocks of a markdown text, each as its commands. */
export function shBlocks(text: string): DocCommand[][] {
  const blocks: DocCommand[][] = [];
  for (const m of text.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const first = text.slice(0, m.index).split("\n").length + 1; // the line after ```sh
    const lines = m[1].trimEnd().split("\n");
    const block: DocCommand[] = [];
    for (let i = 0; i < lines.length; i++) {
      if (!lines[i].trim() || lines[i].startsWith("#")) continue; // blank, or a comment
      const [command, note = ""] = lines[i].split(/\s+#\s*/);
      const c: DocCommand = { line: first + i, command, note, exit: 0, expect: [], ends: false };
      const exit = lines[i + 1]?.match(/^# exit (\d+)$/);
      if (exit) {
        c.exit = Number(exit[1]);
        i++;
      }
      let into = c.expect;
      while (lines[i + 1] === "#" || lines[i + 1]?.startsWith("# ")) {
        const l = lines[++i].slice(2);
        const shows = l.match(/^terminal ([12]) shows:$/);
        if (shows) {
          into = c.shows = [];
          if (shows[1] === "2") c.showsIn = 2; // (terminal 1's, the usual, says nothing)
        } else if (l === "terminal 1 exits") c.ends = true;
        else into.push(l);
      }
      block.push(c);
    }
    blocks.push(block);
  }
  return blocks;
}

/** Why a markdown command is not run, or "" if it is (see the top of docs_test.ts). */
function notRunBecause(c: DocCommand): string {
  const cmd = c.command;
  if (/^deno task test$/.test(cmd)) return "this suite itself";
  // Minutes of load: tests/bench_smoke_test.ts runs one short round instead.
  if (/^deno task bench/.test(cmd)) return "a benchmark; the smoke test runs a short round";
  if (/^(npx|npm) /.test(cmd)) return "changes the machine or needs the registry";
  if (/^sudo\s|(?:^|[\s|;&(])tcpdump\s/.test(cmd)) return "needs root";
  if (/^(apt|apt-get|brew|sysctl)\s/.test(cmd)) return "changes the machine";
  if (
    /https?:\/\/(?!127\.0\.0\.1|localhost|\[::1\])|\bwww\.|\bbind_socket\b(?!.*--host)/.test(cmd)
  ) {
    return "needs the Internet";
  }
  if (/by hand/.test(c.note) || (/^(nc|telnet)\s/.test(cmd) && !/[|<]/.test(cmd))) {
    return "typed into by hand";
  }
  const tool = cmd.match(/(?:^|[\s|;&(])(nc|socat|python3|ss|curl|telnet)\s/)?.[1];
  if (tool && !HAS(tool)) return `${tool} is not installed`;
  return "";
}

/**
 * Waits up to `ms` for `lines` in what `bg` printed past `from` (its stdout's and stderr's
 * lengths when the command began); fails with `what` if they do not come.
 */
async function waitShown(
  bg: Background,
  lines: string[],
  from: [number, number],
  ms: number,
  what: string,
) {
  const deadline = Date.now() + ms;
  while (!shown(lines, bg.out.text.slice(from[0]), bg.err.text.slice(from[1]))) {
    if (Date.now() > deadline) {
      assert.fail(
        `${what}\n--- expected\n${lines.join("\n")}\n--- stdout\n${
          bg.out.text.slice(from[0])
        }--- stderr\n${bg.err.text.slice(from[1])}`,
      );
    }
    await sleep(50);
  }
}

/**
 * Runs every command of the ```sh blocks of the markdown file at `path` by the rules at the top
 * of docs_test.ts (`label` names it in messages), writing to `log` what it ran and what not.
 * `deno install` lines install into `installRoot`; returns the names installed.
 */
export async function runDoc(
  path: string,
  label: string,
  { installRoot, waitMs = SHOW_MS, log }: {
    installRoot?: string;
    waitMs?: number;
    log: RunLog;
  },
): Promise<string[]> {
  const blocks = shBlocks(Deno.readTextFileSync(path));
  const commands = blocks.flat().map((c) => c.command);
  const installed: string[] = [];
  let lastPort: number | undefined; // the port the last terminal 1's text named, for commands not run
  for (const block of blocks) {
    const ports = new PortMap(); // the block runs on free ports, whatever it names
    let bg: Background | undefined; // terminal 1
    let terminal2: Background | undefined; // a second server that stays up (`# terminal 2`)
    let bgCommand = "";
    let down = ""; // why terminal 1, and so the rest of the block, is not run
    /** Fails if terminal 1 ended, by itself, and the text did not say so. */
    const stillUp = (at: string) => {
      const ended = bg?.status();
      if (!ended) return;
      assert.fail(
        `${at}: terminal 1 ('${bgCommand}') exited with code ${ended.code}, and the text does ` +
          `not say so ('# terminal 1 exits' under the command that ends it)\n${bg!.err.text}`,
      );
    };
    try {
      for (const c of block) {
        const at = `${label}.md:${c.line}: '${c.command}'`;
        stillUp(at);
        const why = down || notRunBecause(c);
        if (why) {
          log.notExecuted.push(`${label}: ${c.command} (${why})`);
          const task = c.command.match(/^npx -y deno@2 (task \w+)$/)?.[1];
          if (task) assert.ok(commands.includes(`deno ${task}`), `${at} has no deno twin`);
          // Still true: the port it names is the one terminal 1 really listens on.
          const port = bg ? ports.docPort(bg.port) : lastPort;
          for (const p of down || port === undefined ? [] : portsIn(c.command)) {
            assert.equal(p, port, `${at} names port ${p}; terminal 1 listens on ${port}`);
          }
          if (/terminal 1/.test(c.note)) down = `terminal 1 is not run: ${why}`;
          continue;
        }
        const inTerminal1 = /terminal 1/.test(c.note);
        const inTerminal2 = c.note === "terminal 2"; // one of two servers (a proxy and its target)
        const aServer = /^deno (run|task) /.test(c.command) && /_server/.test(c.command) &&
          !c.expect.length && c.exit === 0 && !c.shows && !c.ends;
        if (inTerminal1 || aServer || inTerminal2) {
          await terminal2?.stop(); // a server started after it takes its place (or its port)
          terminal2 = undefined;
          const command = ports.command(c.command);
          const started = await startBackground(command);
          log.executed.push(`${label}: ${c.command}`);
          try {
            // (A proxy's `--to HOST:PORT` names its target's port, not its own.)
            for (const p of portsIn(command.replace(/--to \S+/, ""))) {
              assert.equal(p, started.port, `${at} (${command})`);
            }
            if (c.expect.length) {
              const expect = ports.lines(c.expect);
              await waitShown(started, expect, [0, 0], waitMs, `${at} did not print its lines`);
            }
          } catch (err) {
            await started.stop();
            throw err;
          }
          if (inTerminal1) {
            await bg?.stop();
            [bg, bgCommand, lastPort] = [started, command, ports.docPort(started.port)];
          } else if (inTerminal2) {
            terminal2 = started; // up for the rest of the block, beside terminal 1
          } else {
            await started.stop(); // only what terminal 1 runs stays up
          }
          continue;
        }
        const from: [number, number] = [bg?.out.text.length ?? 0, bg?.err.text.length ?? 0];
        const from2: [number, number] = [
          terminal2?.out.text.length ?? 0,
          terminal2?.err.text.length ?? 0,
        ];
        if (c.command.startsWith("deno install ")) {
          assert.ok(installRoot, `${at}: no folder given to install into`);
          const r = await shell(`${c.command} --root ${installRoot}`);
          assert.equal(r.code, 0, r.stderr);
          installed.push(c.command.match(/--name (\w+)/)![1]);
          log.executed.push(`${label}: ${c.command} --root TMP`);
        } else {
          const command = ports.command(c.command);
          const r = await shell(command);
          log.executed.push(`${label}: ${c.command}`);
          const printed = `--- ran\n${command}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
          assert.equal(r.code, c.exit, `${at} exited ${r.code}, not ${c.exit}\n${printed}`);
          const expect = ports.lines(c.expect);
          if (expect.length && !shown(expect, r.stdout, r.stderr)) {
            assert.fail(`${at} did not print\n--- expected\n${expect.join("\n")}\n${printed}`);
          }
        }
        if (c.shows) {
          const [t, shower] = c.showsIn === 2 ? [2, terminal2] : [1, bg];
          assert.ok(shower, `${at}: '# terminal ${t} shows:', and no terminal ${t} runs here`);
          const shows = ports.lines(c.shows);
          const since: [number, number] = t === 1 ? from : from2;
          await waitShown(
            shower,
            shows,
            since,
            waitMs,
            `${at}: terminal ${t} did not show its lines`,
          );
        }
        if (c.ends) {
          assert.ok(bg, `${at}: '# terminal 1 exits', and no terminal 1 runs in this block`);
          assert.ok(
            await bg.waitExit(waitMs),
            `${at}: '# terminal 1 exits', and terminal 1 ('${bgCommand}') still runs ${waitMs} ms on`,
          );
          await bg.stop();
          bg = undefined;
        }
      }
      stillUp(`${label}.md:${block.at(-1)?.line}: at the end of its block`);
    } finally {
      await terminal2?.stop();
      await bg?.stop();
    }
  }
  return installed;
}

/**
 * What is wrong with the shape of LESSONS.md: its lessons are `## N. Title` sections numbered 1,
 * 2, 3 ... in order, each with a line starting `**You learn**`, a ```sh block, a line starting
 * `**Look for**` and one starting `**Exercise**`; every `deno task X` it names is a task of
 * deno.json, and every file of the project it names (`scripts/x.ts`, `naive/x.ts`) exists.
 */
export function lessonProblems(text: string): string[] {
  const problems: string[] = [];
  let n = 0;
  for (const section of text.split(/^(?=## )/m)) {
    const title = section.split("\n")[0];
    const number = title.match(/^## (\d+)\. \S/)?.[1];
    if (number === undefined) continue; // not a lesson
    n++;
    if (Number(number) !== n) problems.push(`'${title}': lesson ${n} should come here`);
    const parts: [string, RegExp][] = [
      ["a line starting **You learn**", /^\*\*You learn\*\*/m],
      ["a ```sh block", /^```sh$/m],
      ["a line starting **Look for**", /^\*\*Look for\*\*/m],
      ["a line starting **Exercise**", /^\*\*Exercise\*\*/m],
    ];
    for (const [part, re] of parts) if (!re.test(section)) problems.push(`'${title}': no ${part}`);
    // An answer left open folds every lesson after it into it, on GitHub.
    const open = section.split("<details>").length - section.split("</details>").length;
    if (open !== 0) problems.push(`'${title}': <details> and </details> do not pair up`);
  }
  if (n === 0) problems.push("no lesson ('## 1. Title')");
  const tasks = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).tasks;
  for (const [, task] of text.matchAll(/deno task ([\w-]+(?::[\w-]+)?)/g)) {
    if (!(task in tasks)) problems.push(`names 'deno task ${task}', not a task in deno.json`);
  }
  for (const [file] of text.matchAll(/(?<![\w/.])(?:scripts|naive|lib|tests|bench)\/[\w/.-]*\w/g)) {
    try {
      Deno.statSync(`${ROOT}/${file}`);
    } catch {
      problems.push(`names ${file}, which does not exist`);
    }
  }
  return [...new Set(problems)];
}
