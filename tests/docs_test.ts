/**
 * Teaching truth: every command a reader is shown, in the README, in LESSONS.md
 * and in each script's top comment, is run here and its output checked against
 * the text. The commands are read from the text itself, so a text cannot drift.
 *
 * How a top comment is read (after its ` * ` is stripped):
 * - an indented block after `Run:` or `Run (start scripts/X.ts first):` holds
 *   the `deno run ...` line and the `deno task ...` line; the `deno run` line
 *   must be exactly the task's command (plus arguments);
 * - an indented block after `Expected output...:` is what those lines print;
 * - an indented block of `$ command` lines, each followed by the lines it
 *   prints, is a recipe; a `$` line followed directly by another `$` line is
 *   a server started in the background;
 * - an indented block after `... the server prints...:` is what the server
 *   prints while the recipe before it runs.
 *
 * How a ```sh block of README.md or LESSONS.md is read, line by line (`runDoc`):
 * - `command` runs with `sh -c` in the project folder and must exit 0;
 * - `# text` lines right under it are what it prints; the first of them may be
 *   `# exit N` instead: the command must exit with code N;
 * - `command   # terminal 1` (a note that names terminal 1) starts in the
 *   background and stays up for the rest of the block. It must print
 *   `listening on HOST:PORT` (a program of ours, a naive server), or take
 *   connections on the port it names (a web server); the ports its line names
 *   must be that one, and the `# text` lines under it are what it prints as it
 *   starts. A `deno run|task ..._server` line with nothing under it is started,
 *   checked and stopped the same way;
 * - `# terminal 1 shows:` under a command (after its own lines) starts the
 *   lines terminal 1 prints while or after the command runs (waited for, 10 s);
 * - `# terminal 1 exits` under a command: terminal 1 ends by itself (within
 *   10 s). One that ends when the text does not say so is an error;
 * - a `#` line before any command is a comment.
 * Expected lines are found in stdout, in stderr (where `--trace` and `error:`
 * lines go), or split between the two: each line in the stream that has it,
 * each stream's lines in order and one after the other there (the two pipes
 * are read at once, so lines written at the same moment may come swapped).
 *
 * In expected output, `PORT` is any port, `N` any whole number, `...` alone on
 * a line is any lines, decimals and timestamps stand for any value (they are
 * measurements), two or more spaces are any run of blanks (columns, as `ss`
 * prints them), and blanks at a line's end are ignored.
 *
 * And every call a top comment names is made by the code below it (see
 * `namedCalls`): a comment cannot keep naming a call the code dropped.
 * Commands that need a person at the keyboard (`nc HOST PORT` with no input, a
 * note saying "by hand"), root (`sudo`, `tcpdump`), the Internet, a tool that is
 * not installed (`nc`, `socat`, `python3`, `ss`, `curl`), or would change the
 * machine are not run, and are listed with why; the ports they name are still
 * checked against the server's real one (in a markdown file: terminal 1's, or
 * the last one its text started). LESSONS.md has a shape too (`lessonProblems`).
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { freePort, Output, ROOT, Running, taskCommand, WAIT_MS } from "./helpers.ts";

const DENO_DIR = dirname(Deno.execPath());
const ENV = { NO_COLOR: "1", PATH: `${DENO_DIR}:${Deno.env.get("PATH") ?? ""}` };
/** How long terminal 1 gets to print what a markdown file shows, or to exit. */
const SHOW_MS = 10_000;
interface Step {
  command: string;
  expect: string[];
  serverExpect: string[];
  background: boolean;
}

interface ScriptDoc {
  name: string;
  runLine: string;
  taskLine: string;
  companion?: string;
  expect: string[];
  online: boolean; // the run lines need the Internet
  recipes: Step[];
}

/** The top comment of a script, without its ` * ` margins. */
function topComment(name: string): string[] {
  const text = Deno.readTextFileSync(`${ROOT}/scripts/${name}.ts`);
  const body = text.slice(text.indexOf("/**") + 3, text.indexOf("*/"));
  return body.split("\n").map((l) => l.replace(/^\s*\* ?/, ""));
}

function parseScript(name: string): ScriptDoc {
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
    } else if (/server prints/.test(header) && !block[0].startsWith("$ ")) {
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

/** A regex source for one expected line, with the wildcards described above (no line end). */
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
function expectation(lines: string[]): RegExp {
  const parts = lines.map((line) =>
    line === "..." ? "(?:[^\\n]*\\n)*?" : `${linePattern(line)}[ \\t]*\\n`
  );
  return new RegExp(`(?:^|\\n)${parts.join("")}`);
}

/**
 * Whether `lines` were printed: all in stdout, all in stderr, or split between the two, each line
 * in the stream that has it (stdout if both do) and each stream's share in order there.
 */
function shown(lines: string[], stdout: string, stderr: string): boolean {
  const re = expectation(lines);
  if (re.test(stdout) || re.test(stderr)) return true;
  const inStdout = (line: string) =>
    new RegExp(`(?:^|\\n)${linePattern(line)}[ \\t]*(?:\\n|$)`).test(stdout);
  const outLines = lines.filter((l) => l === "..." || inStdout(l));
  const errLines = lines.filter((l) => l === "..." || !inStdout(l));
  return expectation(outLines).test(stdout) && expectation(errLines).test(stderr);
}

/** argv (after `deno`) for a `deno run` or `deno task` line, as `deno task` would run it. */
function denoArgv(command: string): string[] {
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
async function shell(command: string) {
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

/** Waits until nothing holds `port` on 127.0.0.1, polling every 500 ms, at most `ms`. */
async function waitUntilFree(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return;
    } catch {
      await sleep(500);
    }
  }
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
interface Background {
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
async function startBackground(command: string, retried = false): Promise<Background> {
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
    if (m instanceof Error) {
      // The docs name fixed ports, and 50000 lies in the range the kernel picks
      // client ports from: another test's connection may hold it (for 60 s in
      // TIME_WAIT). Wait until it is free, once.
      const port = m.message.match(/port (\d+) is already in use/)?.[1];
      if (port === undefined || retried) throw m;
      await waitUntilFree(Number(port), 70_000);
      return startBackground(command, true);
    }
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
function portsIn(command: string): number[] {
  const named =
    /(?:(?<!\/\/)(?:127\.0\.0\.1|localhost)[ :]|--port |-p |(?<![\w-])port |[sd]port = :)(\d+)/g;
  return [...command.matchAll(named)].map((m) => Number(m[1]));
}

/** The names of what `lib/*.ts` exports as values (functions, classes, constants). */
function libExports(): Set<string> {
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
 * Names a top comment may mention without the code using them, each with why: the
 * alternative a script explains it does not take. An entry must still be true (named in the
 * comment, absent from the code), so the list cannot go stale.
 */
const NOT_CALLED: Record<string, { name: string; why: string }[]> = {
  bind_socket: [{ name: "Deno.resolveDns", why: "the resolver it does not use, and why" }],
};

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
function namedCalls(
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
function withoutComments(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\//g, "")
    .split("\n")
    .map((line) => line.replace(/^\s*\/\/.*$/, "").replace(/\s\/\/\s.*$/, ""))
    .join("\n");
}

/** Whether `code` holds `text` with no identifier character glued to either end. */
function containsWord(code: string, text: string): boolean {
  const escaped = text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const start = /^[\w$]/.test(text) ? "(?<![\\w$])" : "";
  const end = /[\w$]$/.test(text) ? "(?![\\w$])" : "";
  return new RegExp(`${start}${escaped}${end}`).test(code);
}

const executed: string[] = [];
const notExecuted: string[] = [];

// Files only (scripts/workers/ holds what a script loads as a Worker, not run on its own).
const SCRIPTS = [...Deno.readDirSync(`${ROOT}/scripts`)]
  .filter((e) => e.isFile)
  .map((e) => e.name.replace(/\.ts$/, ""))
  .sort();
const IS_SERVER = (name: string) => /_server/.test(name);
const installedTools = new Map<string, boolean>();
const HAS = (cmd: string) => {
  if (!installedTools.has(cmd)) {
    const probe = new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" });
    installedTools.set(cmd, probe.outputSync().success);
  }
  return installedTools.get(cmd)!;
};

Deno.test("namedCalls: which backticked names are claims, and what the code must hold", () => {
  const comment = [
    "every `await conn.read()` below; `Deno.listen`, not `Deno.Conn`; `readExact` and",
    "`TcpServer.handle`; `accept()`, `new Worker(import.meta.url)`, `serveLines`; the seed's",
    "`recv(1024)`, `socket.socket()`, `select()`; `--max-line`, `OK ... <line>`, `write`",
  ].join("\n");
  assert.deepEqual(namedCalls(comment, new Set(["readExact", "TcpServer"])), [
    { token: "await conn.read()", needs: ["conn.read"] },
    { token: "Deno.listen", needs: ["Deno.listen"] },
    { token: "readExact", needs: ["readExact"] },
    { token: "TcpServer.handle", needs: ["TcpServer", ".handle"] },
    { token: "accept()", needs: [".accept("] },
    { token: "new Worker(import.meta.url)", needs: ["new Worker"] },
    { token: "serveLines", needs: ["serveLines"] },
  ]);
  const code = withoutComments("const n = await conn.read(buf); // readExact\n/* readExact */");
  assert.ok(containsWord(code, "conn.read"));
  assert.ok(!containsWord(code, "readExact"), "a name in a comment is not a call");
  assert.ok(!containsWord("conn.readable", "conn.read"), "conn.readable is not conn.read");
});

const LIB = libExports();
for (const name of SCRIPTS) {
  Deno.test(`${name}: every call the top comment names is in the code below it`, () => {
    const text = Deno.readTextFileSync(`${ROOT}/scripts/${name}.ts`);
    const code = withoutComments(text.slice(text.indexOf("*/") + 2));
    const comment = topComment(name).join("\n");
    const exempt = NOT_CALLED[name] ?? [];
    const missing: string[] = [];
    for (const { token, needs } of namedCalls(comment, LIB)) {
      if (exempt.some((e) => e.name === token.replace(/\(.*\)$/, ""))) continue;
      const absent = needs.filter((n) => !containsWord(code, n));
      if (absent.length) {
        missing.push(`\`${token}\` (no ${absent.map((n) => `'${n}'`).join(", ")})`);
      }
    }
    for (const e of exempt) {
      assert.ok(comment.includes(`\`${e.name}`), `${name}: NOT_CALLED lists ${e.name}, not named`);
      assert.ok(!containsWord(code, e.name), `${name}: NOT_CALLED lists ${e.name}, which is used`);
    }
    if (missing.length) {
      assert.fail(
        `scripts/${name}.ts: its top comment names calls the code below it does not make:\n  ${
          missing.join("\n  ")
        }`,
      );
    }
  });
}

for (const name of SCRIPTS) {
  Deno.test(`${name}: the top comment's commands are true`, async () => {
    const doc = parseScript(name);
    // The `deno run` line is the task's command, so what the tests run is what the comment says.
    const [task] = doc.taskLine.split(/\s+/).slice(2);
    assert.equal(task, name, `${name}: the 'deno task' line names ${task}`);
    const taskArgv = taskCommand(name);
    assert.deepEqual(
      denoArgv(doc.runLine).slice(0, taskArgv.length),
      taskArgv,
      `${name}: 'deno run' line differs from deno.json`,
    );
    assert.match(
      Deno.readTextFileSync(`${ROOT}/README.md`),
      new RegExp(`scripts/${name}\\.ts`),
      `${name}: not in the README`,
    );

    const companion = doc.companion ? parseScript(doc.companion) : undefined;
    const server = IS_SERVER(name) ? doc : companion;

    /** Runs `step` with the server (if any) started fresh from its own comment, and checks both outputs. */
    const runStep = async (step: Step, background?: { stop: () => Promise<void> }) => {
      const started = server ? await startBackground(server.runLine) : undefined;
      try {
        const r = await shell(step.command);
        executed.push(`${name}: ${step.command}`);
        assert.equal(
          r.code,
          0,
          `${name}: '${step.command}' exited ${r.code}\n${r.stdout}${r.stderr}`,
        );
        if (step.expect.length) {
          assert.match(
            r.stdout,
            expectation(step.expect),
            `${name}: '${step.command}' printed:\n${r.stdout}`,
          );
        }
        if (step.serverExpect.length) await started!.out.waitFor(expectation(step.serverExpect));
      } finally {
        await started?.stop();
        await background?.stop();
      }
    };

    // The Run lines themselves.
    if (doc.online) {
      notExecuted.push(`${name}: ${doc.runLine} (needs the Internet)`);
    } else if (IS_SERVER(name)) {
      for (const line of [doc.runLine, doc.taskLine]) {
        const started = await startBackground(line);
        executed.push(`${name}: ${line}`);
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
      const needs = step.command.match(/\b(nc|python3)\b/)?.[1];
      if (interactive || / -l /.test(step.command) || (needs && !HAS(needs))) {
        const why = / -l /.test(step.command)
          ? "nc plays the server; the end-to-end tests run that pairing"
          : interactive
          ? "typed into by hand"
          : `${needs} is not installed`;
        notExecuted.push(`${name}: ${step.command} (${why})`);
        // Still true: the port it names is the one the server really uses.
        if (server && !server.online) {
          const s = await startBackground(server.runLine);
          await s.stop();
          for (const port of portsIn(step.command)) {
            assert.equal(port, s.port, `${name}: '${step.command}'`);
          }
        }
        continue;
      }
      if (step.background) {
        background = await startBackground(step.command);
        executed.push(`${name}: ${step.command} (in the background)`);
        continue;
      }
      await runStep(step, background);
      background = undefined;
    }
  });
}

/** A command of a ```sh block in a markdown file, with what the `#` lines under it say. */
interface DocCommand {
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
  /** Whether terminal 1 ends by itself (`# terminal 1 exits`). */
  ends: boolean;
}

/** The ```sh blocks of a markdown text, each as its commands. */
function shBlocks(text: string): DocCommand[][] {
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
        if (l === "terminal 1 shows:") into = c.shows = [];
        else if (l === "terminal 1 exits") c.ends = true;
        else into.push(l);
      }
      block.push(c);
    }
    blocks.push(block);
  }
  return blocks;
}

/** Why a markdown command is not run, or "" if it is (see the top of this file). */
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

/** Where a markdown run writes what it ran and what it did not. */
interface RunLog {
  executed: string[];
  notExecuted: string[];
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
 * of this file (`label` names it in messages). `deno install` lines install into `installRoot`;
 * returns the names installed.
 */
async function runDoc(
  path: string,
  label: string,
  { installRoot, waitMs = SHOW_MS, log = { executed, notExecuted } }: {
    installRoot?: string;
    waitMs?: number;
    log?: RunLog;
  } = {},
): Promise<string[]> {
  const blocks = shBlocks(Deno.readTextFileSync(path));
  const commands = blocks.flat().map((c) => c.command);
  const installed: string[] = [];
  let lastPort: number | undefined; // the last terminal 1's port, for commands not run
  for (const block of blocks) {
    let bg: Background | undefined; // terminal 1
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
          const port = bg?.port ?? lastPort;
          for (const p of down || port === undefined ? [] : portsIn(c.command)) {
            assert.equal(p, port, `${at} names port ${p}; terminal 1 listens on ${port}`);
          }
          if (/terminal 1/.test(c.note)) down = `terminal 1 is not run: ${why}`;
          continue;
        }
        const inTerminal1 = /terminal 1/.test(c.note);
        const aServer = /^deno (run|task) /.test(c.command) && /_server/.test(c.command) &&
          !c.expect.length && c.exit === 0 && !c.shows && !c.ends;
        if (inTerminal1 || aServer) {
          const started = await startBackground(c.command);
          log.executed.push(`${label}: ${c.command}`);
          try {
            for (const p of portsIn(c.command)) assert.equal(p, started.port, at);
            if (c.expect.length) {
              await waitShown(started, c.expect, [0, 0], waitMs, `${at} did not print its lines`);
            }
          } catch (err) {
            await started.stop();
            throw err;
          }
          if (inTerminal1) {
            await bg?.stop();
            [bg, bgCommand, lastPort] = [started, c.command, started.port];
          } else {
            await started.stop(); // only what terminal 1 runs stays up
          }
          continue;
        }
        const from: [number, number] = [bg?.out.text.length ?? 0, bg?.err.text.length ?? 0];
        if (c.command.startsWith("deno install ")) {
          assert.ok(installRoot, `${at}: no folder given to install into`);
          const r = await shell(`${c.command} --root ${installRoot}`);
          assert.equal(r.code, 0, r.stderr);
          installed.push(c.command.match(/--name (\w+)/)![1]);
          log.executed.push(`${label}: ${c.command} --root TMP`);
        } else {
          const r = await shell(c.command);
          log.executed.push(`${label}: ${c.command}`);
          const printed = `--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
          assert.equal(r.code, c.exit, `${at} exited ${r.code}, not ${c.exit}\n${printed}`);
          if (c.expect.length && !shown(c.expect, r.stdout, r.stderr)) {
            assert.fail(`${at} did not print\n--- expected\n${c.expect.join("\n")}\n${printed}`);
          }
        }
        if (c.shows) {
          assert.ok(bg, `${at}: '# terminal 1 shows:', and no terminal 1 runs in this block`);
          await waitShown(bg, c.shows, from, waitMs, `${at}: terminal 1 did not show its lines`);
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
function lessonProblems(text: string): string[] {
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

/** A server for the runner's own test: answers one read per client, `quit` ends it (code 3). */
const FAKE_SERVER = [
  `const port = Number(Deno.args[Deno.args.indexOf("--port") + 1]);`,
  `const listener = Deno.listen({ hostname: "127.0.0.1", port });`,
  "console.log(`listening on 127.0.0.1:${listener.addr.port}`);",
  `for await (const conn of listener) {`,
  `  const buf = new Uint8Array(100);`,
  `  const n = (await conn.read(buf)) ?? 0;`,
  `  const line = new TextDecoder().decode(buf.subarray(0, n)).trim();`,
  "  console.log(`got ${line}`);",
  "  console.error(`trace read ${n} B`);",
  "  await conn.write(new TextEncoder().encode(`OK ... ${line}\\n`));",
  `  conn.close();`,
  `  if (line === "quit") Deno.exit(3);`,
  `}`,
].join("\n");

Deno.test("markdown: how a ```sh block is read", () => {
  const text = [
    "Some prose.",
    "```sh",
    "# a comment",
    "deno task x_server   # terminal 1",
    "# listening on 127.0.0.1:PORT",
    "printf 'a\\n' | nc -N 127.0.0.1 8888   # terminal 2 prints:",
    "# OK ... a",
    "# terminal 1 shows:",
    "# got a",
    "# terminal 1 exits",
    "deno task y --port 1",
    "# exit 1",
    "# error: refused",
    "echo 'exit 2'",
    "# OK",
    "# exit 2",
    "```",
  ].join("\n");
  assert.deepEqual(shBlocks(text), [[
    {
      line: 4,
      command: "deno task x_server",
      note: "terminal 1",
      exit: 0,
      expect: ["listening on 127.0.0.1:PORT"],
      ends: false,
    },
    {
      line: 6,
      command: "printf 'a\\n' | nc -N 127.0.0.1 8888",
      note: "terminal 2 prints:",
      exit: 0,
      expect: ["OK ... a"],
      shows: ["got a"],
      ends: true,
    },
    {
      line: 11,
      command: "deno task y --port 1",
      note: "",
      exit: 1,
      expect: ["error: refused"],
      ends: false,
    },
    // `# exit N` is the exit code only right under the command.
    {
      line: 14,
      command: "echo 'exit 2'",
      note: "",
      exit: 0,
      expect: ["OK", "exit 2"],
      ends: false,
    },
  ]]);
  assert.ok(shown(["a", "x  y", "b"], "a\nb\n", "x    y \n"), "split between the streams");
  assert.ok(!shown(["b", "a"], "a\nb\n", ""), "in order");
  assert.ok(!shown(["a", "b"], "a\nc\nb\n", ""), "one after the other");
  assert.ok(shown(["a", "...", "b"], "a\nc\nb\n", ""), "`...` is any lines");
  assert.deepEqual(portsIn("sudo tcpdump -i lo port 8888; ss -tn 'sport = :8889'"), [8888, 8889]);
});

Deno.test("markdown: the runner runs a fixture of every rule, and fails on each false line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "docs-fixture-" });
  try {
    await Deno.writeTextFile(`${dir}/fake_server.ts`, FAKE_SERVER);
    const [port, closed] = [freePort(), freePort()];
    /** Runs a fixture of one ```sh block made of `lines`. */
    const run = async (lines: string[], log: RunLog = { executed: [], notExecuted: [] }) => {
      const text = ["```sh", ...lines, "```", ""].join("\n")
        .replaceAll("{fake}", `deno run --allow-net=127.0.0.1 ${dir}/fake_server.ts --port ${port}`)
        .replaceAll("{port}", String(port))
        .replaceAll("{closed}", String(closed));
      await Deno.writeTextFile(`${dir}/doc.md`, text);
      await runDoc(`${dir}/doc.md`, "fixture", { waitMs: 2000, log });
      return log;
    };
    const log = await run([
      "# terminal 1 prints what it reads, and ends on quit",
      "{fake}   # terminal 1",
      "# listening on 127.0.0.1:PORT",
      "deno task socket_client --port {port} -m hello   # terminal 2 prints:",
      "# OK ... hello",
      "# terminal 1 shows:",
      "# got hello",
      "# trace read N B",
      "sh -c 'echo oops >&2; exit 3'",
      "# exit 3",
      "# oops",
      "sudo tcpdump -i lo -n port {port}",
      "nc 127.0.0.1 {port}",
      "deno task socket_client --port {port} -m quit",
      "# OK ... quit",
      "# terminal 1 shows:",
      "# got quit",
      "# terminal 1 exits",
    ]);
    assert.equal(log.executed.length, 4, log.executed.join("\n"));
    assert.deepEqual(log.notExecuted, [
      `fixture: sudo tcpdump -i lo -n port ${port} (needs root)`,
      `fixture: nc 127.0.0.1 ${port} (typed into by hand)`,
    ]);

    const fails = async (lines: string[], message: RegExp) => {
      await assert.rejects(run(lines), message, lines.join("\n"));
    };
    await fails(["sh -c 'echo hi'", "# bye"], /did not print/);
    await fails(["sh -c 'exit 3'"], /exited 3, not 0/);
    await fails(["{fake}   # terminal 1", "sudo tcpdump -i lo port {closed}"], /names port/);
    await fails(
      ["{fake}   # terminal 1", "true", "# terminal 1 shows:", "# got hello"],
      /did not show its lines/,
    );
    await fails(["{fake}   # terminal 1", "true", "# terminal 1 exits"], /still runs/);
    await fails(
      ["{fake}   # terminal 1", "deno task socket_client --port {port} -m quit", "sleep 1", "true"],
      /exited with code 3, and the text does not say so/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("LESSONS shape: numbered lessons with their four parts, naming what exists", () => {
  const lesson = (title: string, without = "") =>
    [
      title,
      "**You learn** x",
      "```sh",
      "deno task socket_server   # terminal 1",
      "```",
      "**Look for** y, in scripts/socket_server.ts",
      "**Exercise** z",
    ].filter((l) => !without || !l.startsWith(without)).join("\n");
  const good = ["# Lessons", lesson("## 1. One"), "## Notes", lesson("## 2. Two")].join("\n");
  assert.deepEqual(lessonProblems(good), []);
  const bad = [
    lesson("## 1. One", "**Exercise**"),
    lesson("## 3. Three"),
    "Try `deno task nope` and naive/nope.ts.",
  ].join("\n");
  assert.deepEqual(lessonProblems(bad), [
    "'## 1. One': no a line starting **Exercise**",
    "'## 3. Three': lesson 2 should come here",
    "names 'deno task nope', not a task in deno.json",
    "names naive/nope.ts, which does not exist",
  ]);
});

Deno.test("README: every command shown is run, or checked", async () => {
  const root = await Deno.makeTempDir();
  try {
    const installed = await runDoc(`${ROOT}/README.md`, "README", { installRoot: root });
    // The installed server and client, run together.
    assert.deepEqual(installed, ["socket_server", "socket_client"]);
    const child = new Deno.Command(`${root}/bin/socket_server`, {
      args: ["--port", "0"],
      env: ENV,
      stdout: "piped",
      stderr: "null",
    })
      .spawn();
    const out = new Output(child.stdout);
    const [, port] = await out.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
    const client = await shell(`${root}/bin/socket_client --port ${port} -m hi`);
    child.kill("SIGTERM");
    await child.status;
    await out.done;
    assert.equal(client.stdout, "OK ... hi\n", client.stderr);
    executed.push("README: the installed socket_server and socket_client, together");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
  console.log(`executed ${executed.length} commands; not executed:\n  ${notExecuted.join("\n  ")}`);
});

Deno.test("LESSONS: every command shown is run, or checked", async () => {
  const problems = lessonProblems(Deno.readTextFileSync(`${ROOT}/LESSONS.md`));
  if (!/\]\((?:\.\/)?LESSONS\.md\)/.test(Deno.readTextFileSync(`${ROOT}/README.md`))) {
    problems.push("README.md does not link it");
  }
  // Said first, and failed on last: the commands' own failures are worth seeing meanwhile.
  if (problems.length) console.log(`LESSONS.md:\n  ${problems.join("\n  ")}`);
  const log: RunLog = { executed: [], notExecuted: [] };
  await runDoc(`${ROOT}/LESSONS.md`, "LESSONS", { log });
  console.log(
    `executed ${log.executed.length} commands; not executed:\n  ${
      log.notExecuted.join("\n  ") || "none"
    }`,
  );
  if (problems.length) assert.fail(`LESSONS.md:\n  ${problems.join("\n  ")}`);
});
