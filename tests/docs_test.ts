/**
 * Teaching truth: every command a reader is shown, in the README and in each
 * script's top comment, is run here and its output checked against the text.
 * The commands are read from the text itself, so a comment cannot drift.
 *
 * How the text is read (a top comment, after its ` * ` is stripped):
 * - an indented block after `Run:` or `Run (start scripts/X.ts first):` holds
 *   the `deno run ...` line and the `deno task ...` line; the `deno run` line
 *   must be exactly the task's command (plus arguments);
 * - an indented block after `Expected output...:` is what those lines print;
 * - an indented block of `$ command` lines, each followed by the lines it
 *   prints, is a recipe; a `$` line followed directly by another `$` line is
 *   a server started in the background;
 * - an indented block after `... the server prints...:` is what the server
 *   prints while the recipe before it runs.
 * In expected output, `PORT` is any port, `N` any whole number, `...` alone on a line is any lines,
 * and decimals and timestamps stand for any value (they are measurements).
 *
 * And every call a top comment names is made by the code below it (see
 * `namedCalls`): a comment cannot keep naming a call the code dropped.
 * Commands that need a person at the keyboard or the Internet are not run;
 * the ports they name are still checked against the server's real one.
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { Output, ROOT, Running, taskCommand, WAIT_MS } from "./helpers.ts";

const DENO_DIR = dirname(Deno.execPath());
const ENV = { NO_COLOR: "1", PATH: `${DENO_DIR}:${Deno.env.get("PATH") ?? ""}` };

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

/** A regex for expected output lines, with the wildcards described above. */
function expectation(lines: string[]): RegExp {
  const token = /(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+|\d+\.\d+|PORT|\bN\b)/;
  const parts = lines.map((line) => {
    if (line === "...") return "(?:[^\\n]*\\n)*?";
    return line.split(token).map((piece, k) => {
      if (k % 2 === 0) return piece.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      if (piece === "PORT" || piece === "N") return "\\d+";
      if (piece.includes(":")) return "\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d+";
      return "\\d+\\.\\d+";
    }).join("") + "\\n";
  });
  return new RegExp(`(?:^|\\n)${parts.join("")}`);
}

/** argv (after `deno`) for a `deno run` or `deno task` line, as `deno task` would run it. */
function denoArgv(command: string): string[] {
  // Single quotes are the shell's (they keep zsh from globbing `[::1]`), not the argument's.
  const words = command.split(/\s+/).map((w) => w.replaceAll("'", ""));
  assert.equal(words[0], "deno", command);
  if (words[1] === "task") return [...taskCommand(words[2]), ...words.slice(3)];
  return words.slice(1);
}

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
  const timer = setTimeout(() => child.kill("SIGKILL"), WAIT_MS * 2);
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
      await new Promise((r) => setTimeout(r, 500));
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

/** A background process from a doc line: one of our servers, or another (`python3 -m http.server`). */
async function startBackground(
  command: string,
  retried = false,
): Promise<{ out: Output; stop: () => Promise<void>; port?: number }> {
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
      port: Number(m[1]),
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
    stdout: "piped",
    stderr: "null",
  })
    .spawn();
  const out = new Output(child.stdout);
  const port = Number(command.match(/\b(\d{4,5})\b/)![1]);
  for (let i = 0; i < 200; i++) {
    const probe = await Deno.connect({ hostname: "127.0.0.1", port }).catch(() => null);
    if (probe) {
      probe.close();
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    out,
    port,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
      await out.done;
    },
  };
}

/**
 * Ports a command names (`127.0.0.1 8888`, `:8888`, `--port 8888`); not a web address's
 * (`http://127.0.0.1:8000/scripts/x.ts` is where the script comes from).
 */
function portsIn(command: string): number[] {
  return [...command.matchAll(/(?:(?<!\/\/)127\.0\.0\.1[ :]|--port |-p )(\d+)/g)]
    .map((m) => Number(m[1]));
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
const HAS = (cmd: string) =>
  new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" }).outputSync()
    .success;

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

Deno.test("README: every command shown is run, or checked", async () => {
  const readme = Deno.readTextFileSync(`${ROOT}/README.md`);
  const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) =>
    m[1].trimEnd().split("\n")
  );
  const root = await Deno.makeTempDir();
  try {
    const installed: string[] = [];
    for (const block of blocks) {
      let background: Awaited<ReturnType<typeof startBackground>> | undefined;
      for (let i = 0; i < block.length; i++) {
        const [command, note = ""] = block[i].split(/\s+#\s*/);
        const expect: string[] = [];
        while (block[i + 1]?.startsWith("# ")) expect.push(block[++i].slice(2));
        if (/^deno task test$/.test(command)) {
          notExecuted.push(`README: ${command} (this suite itself)`);
        } else if (/^deno task bench/.test(command)) {
          // Minutes of load: tests/bench_smoke_test.ts runs one short round instead.
          notExecuted.push(`README: ${command} (a benchmark; the smoke test runs a short round)`);
        } else if (/^(npx|npm) /.test(command)) {
          // Not run: it would install from the registry. It must stand for a deno line that is run.
          notExecuted.push(`README: ${command} (changes the machine or needs the registry)`);
          const task = command.match(/^npx -y deno@2 (task \w+)$/)?.[1];
          if (task) {
            assert.ok(
              blocks.flat().includes(`deno ${task}`),
              `README: '${command}' has no deno twin`,
            );
          }
        } else if (
          /terminal 1/.test(note) ||
          (/^deno (run|task) /.test(command) && /_server/.test(command) && !expect.length)
        ) {
          const started = await startBackground(command);
          executed.push(`README: ${command}`);
          for (const port of portsIn(command)) assert.equal(port, started.port, command);
          if (/terminal 1/.test(note)) {
            await background?.stop();
            background = started;
          } else {
            await started.stop(); // what terminal 1 runs stays up for it
          }
        } else if (command.startsWith("deno install ")) {
          const r = await shell(`${command} --root ${root}`);
          assert.equal(r.code, 0, r.stderr);
          installed.push(command.match(/--name (\w+)/)![1]);
          executed.push(`README: ${command} --root TMP`);
        } else {
          const r = await shell(command);
          executed.push(`README: ${command}`);
          assert.equal(r.code, 0, `${command}\n${r.stdout}${r.stderr}`);
          if (expect.length) {
            assert.match(r.stdout, expectation(expect), `${command} printed:\n${r.stdout}`);
          }
        }
      }
      await background?.stop();
    }
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
