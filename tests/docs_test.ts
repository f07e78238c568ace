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

/** A background process from a doc line: one of our servers, or another (`python3 -m http.server`). */
async function startBackground(
  command: string,
  retried = false,
): Promise<{ out: Output; stop: () => Promise<void>; port?: number }> {
  if (command.startsWith("deno ")) {
    const server = new Running(denoArgv(command));
    const m = await server.stdout.waitFor(/listening on \S+:(\d+)/).catch(async (err) => {
      server.kill("SIGKILL");
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
    return { out: server.stdout, port: Number(m[1]), stop: async () => void (await server.stop()) };
  }
  const child = new Deno.Command("sh", {
    args: ["-c", `exec ${command}`],
    cwd: "/tmp",
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

/** Ports a command names (`127.0.0.1 8888`, `:8888`, `--port 8888`). */
function portsIn(command: string): number[] {
  return [...command.matchAll(/(?:127\.0\.0\.1[ :]|--port |-p )(\d+)/g)].map((m) => Number(m[1]));
}

const executed: string[] = [];
const notExecuted: string[] = [];

const SCRIPTS = [...Deno.readDirSync(`${ROOT}/scripts`)]
  .map((e) => e.name.replace(/\.ts$/, ""))
  .sort();
const IS_SERVER = (name: string) => /_server/.test(name);
const HAS = (cmd: string) =>
  new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" }).outputSync()
    .success;

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
          background = await startBackground(command);
          executed.push(`README: ${command}`);
          for (const port of portsIn(command)) assert.equal(port, background.port, command);
          if (!/terminal 1/.test(note)) {
            await background.stop();
            background = undefined;
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
