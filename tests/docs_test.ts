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
 * - an indented block after `... the server prints...:` (or `the proxy
 *   prints`) is what the server prints while the recipe before it runs.
 *
 * How a ```sh block of a markdown file (`DOCS`: README.md, LESSONS.md, CONTRIBUTING.md,
 * bench/README.md) is read, line by line (`runDoc`):
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
 * - `command   # terminal 2` (exactly that note) is a second server that stays up
 *   beside terminal 1 (a proxy and its target) until the block ends or another
 *   server starts;
 * - `# terminal 1 shows:` under a command (after its own lines) starts the
 *   lines terminal 1 prints while or after the command runs (waited for, 10 s);
 *   `# terminal 2 shows:`, the same for terminal 2;
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
 * prints them), and blanks at a line's end (a CR too: HTTP's lines end in CRLF) are ignored.
 *
 * And every call a top comment names is made by the code below it (see
 * `namedCalls`): a comment cannot keep naming a call the code dropped.
 * Commands that need a person at the keyboard (`nc HOST PORT` with no input, a
 * note saying "by hand"), root (`sudo`, `tcpdump`), the Internet, a tool that is
 * not installed (`nc`, `socat`, `python3`, `ss`, `curl`), or would change the
 * machine are not run, and are listed with why; the ports they name are still
 * checked against the server's real one (in a markdown file: terminal 1's, or
 * the last one its text started). LESSONS.md has a shape too (`lessonProblems`).
 *
 * The docs name fixed ports (8888, 50000, ...), and a reader may run a server on any of them
 * beside the tests, as the README invites. So each block (a ```sh block, a top comment) runs on
 * free ports: every port it names is moved to a free one, the same one in its commands and in
 * the output they must print, and a command of ours that names no port is given `--port`
 * (`PortMap`). While this file runs, it holds every fixed port that is free (`fixedPorts`: the
 * scripts' defaults and every port the docs name), so a command that still used one would fail
 * here, whoever else runs on the machine.
 *
 * This file is the list of what is checked; `docs_runner.ts` is how a text is read and run
 * (`parseScript` and `runScriptDoc`, `shBlocks` and `runDoc`, `namedCalls`, `lessonProblems`).
 */
import assert from "node:assert/strict";
import { freePort, Output, ROOT, taskCommand } from "./helpers.ts";
import {
  containsWord,
  defaultPorts,
  denoArgv,
  ENV,
  fixedPorts,
  lessonProblems,
  libExports,
  namedCalls,
  parseScript,
  PortMap,
  portsIn,
  runDoc,
  type RunLog,
  runScriptDoc,
  shBlocks,
  shell,
  shown,
  topComment,
  withoutComments,
} from "./docs_runner.ts";

/**
 * Names a top comment may mention without the code using them, each with why: the
 * alternative a script explains it does not take. An entry must still be true (named in the
 * comment, absent from the code), so the list cannot go stale.
 */
const NOT_CALLED: Record<string, { name: string; why: string }[]> = {
  bind_socket: [{ name: "Deno.resolveDns", why: "the resolver it does not use, and why" }],
  http_server: [{ name: "Deno.serve", why: "the built-in HTTP server whose work it does by hand" }],
};

/**
 * The fixed ports, held while this file runs: a listener that never accepts on each one that is
 * free (one a reader's server holds is busy already). Deno closes them when this file is done.
 */
const FIXED = fixedPorts();
const HELD: Deno.Listener[] = FIXED.flatMap((port) => {
  try {
    return [Deno.listen({ hostname: "127.0.0.1", port })];
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) return []; // held already: by a reader's server
    throw err;
  }
});

Deno.test("the docs run beside a server on every fixed port: all of them are held meanwhile", () => {
  // SPEC's defaults, and the ports the lessons name (tcp_server's 5005, a refused 5006).
  for (const port of [5005, 5006, 8888, 8889, 8890, 12345, 50000]) {
    assert.ok(FIXED.includes(port), `${port} is not among the fixed ports: ${FIXED}`);
  }
  assert.equal(defaultPorts().get("naive/ok_server"), 8888);
  for (const port of FIXED) {
    assert.throws(
      () => Deno.listen({ hostname: "127.0.0.1", port }).close(),
      Deno.errors.AddrInUse,
      `port ${port} is free while the docs run`,
    );
  }
  console.log(`held ${HELD.length} of the ${FIXED.length} fixed ports: ${FIXED.join(", ")}`);
});

/** What the scripts' and the markdown files' commands ran, and did not: CONTRIBUTING's test prints it. */
const executed: string[] = [];
const notExecuted: string[] = [];
const ran: RunLog = { executed, notExecuted };

// Files only (scripts/workers/ holds what a script loads as a Worker, not run on its own).
const SCRIPTS = [...Deno.readDirSync(`${ROOT}/scripts`)]
  .filter((e) => e.isFile)
  .map((e) => e.name.replace(/\.ts$/, ""))
  .sort();

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

    await runScriptDoc(doc, ran);
  });
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

Deno.test("PortMap: a block runs on free ports, the same ones in its commands and its output", () => {
  const map = new PortMap();
  const server = map.command("deno task socket_server --trace   # terminal 1");
  const [, port] = server.match(/^deno task socket_server --port (\d+) --trace/)!;
  assert.ok(!FIXED.includes(Number(port)), server);
  assert.equal(map.docPort(Number(port)), 8888);
  const moved = (command: string) => map.command(command).replaceAll(port, "P");
  assert.equal(moved("printf 'a\\n' | nc -N 127.0.0.1 8888"), "printf 'a\\n' | nc -N 127.0.0.1 P");
  assert.equal(
    moved("printf 'x\\n' | deno task socket_client -m 'a | b' > out.txt; echo done"),
    "printf 'x\\n' | deno task socket_client --port P -m 'a | b' > out.txt; echo done",
  );
  assert.equal(
    moved("deno run --allow-net='127.0.0.1,[::1]' scripts/socket_server_with_select.ts -p 8888"),
    "deno run --allow-net='127.0.0.1,[::1]' scripts/socket_server_with_select.ts -p P",
  );
  assert.equal(
    moved(`python3 -c 's = socket.create_connection(("127.0.0.1", 8888))'`),
    `python3 -c 's = socket.create_connection(("127.0.0.1", P))'`,
  );
  assert.equal(moved("ss -Htn 'sport = :8888'"), "ss -Htn 'sport = :P'");
  // Another fixed port gets a free port of its own; a port asked for (0), or the Internet's, none.
  const refused = map.command("deno task tcp_client --host 127.0.0.1 --port 5006");
  const other = refused.match(/--port (\d+)$/)![1];
  assert.notEqual(other, port);
  assert.deepEqual(map.lines(["refused by 127.0.0.1:5006: start it with --port 5006", "0.5006"]), [
    `refused by 127.0.0.1:${other}: start it with --port ${other}`,
    "0.5006",
  ]);
  assert.equal(map.command("deno task tcp_server --port 0"), "deno task tcp_server --port 0");
  assert.equal(map.command("deno task bind_socket --request"), "deno task bind_socket --request");
  assert.match(map.command("deno task hello_client"), /^deno task hello_client --port \d+$/);
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
    "<details><summary>Answer</summary>", // never closed
    "Try `deno task nope` and naive/nope.ts.",
  ].join("\n");
  assert.deepEqual(lessonProblems(bad), [
    "'## 1. One': no a line starting **Exercise**",
    "'## 3. Three': lesson 2 should come here",
    "'## 3. Three': <details> and </details> do not pair up",
    "names 'deno task nope', not a task in deno.json",
    "names naive/nope.ts, which does not exist",
  ]);
});

Deno.test("README: every command shown is run, or checked", async () => {
  assert.deepEqual(await runDoc(`${ROOT}/README.md`, "README", { log: ran }), []);
});

Deno.test("bench/README: every command shown is run, or checked", async () => {
  await runDoc(`${ROOT}/bench/README.md`, "bench/README", { log: ran });
});

Deno.test("CONTRIBUTING: every command shown is run, or checked", async () => {
  const root = await Deno.makeTempDir();
  try {
    const installed = await runDoc(`${ROOT}/CONTRIBUTING.md`, "CONTRIBUTING", {
      installRoot: root,
      log: ran,
    });
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
    executed.push("CONTRIBUTING: the installed socket_server and socket_client, together");
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

Deno.test("README: says how long `deno task test` takes; the task prints a dot per test", () => {
  const task = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).tasks.test;
  assert.match(task.command, /^deno test .*--reporter=dot(\s|$)/, "the quiet reporter");
  // Beside the command: its section, "Two commands".
  const readme = Deno.readTextFileSync(`${ROOT}/README.md`);
  const start = readme.indexOf("## Two commands");
  const section = readme.slice(start, readme.indexOf("\n## ", start + 1));
  assert.match(section, /^deno task test$/m);
  assert.match(section, /takes about \d+ minutes/, "how long it takes");
  assert.match(section, /one dot per test/, "what it prints meanwhile");
  assert.match(section, /`ok \| N passed \| 0 failed`/, "its last line");
});

Deno.test(".ci/run finds the summary the test task's reporter prints, on a failure too", async () => {
  const reporter = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).tasks.test.command
    .match(/--reporter=\S+/)?.[0];
  // The lines of .ci/run that read the counts from the log.
  const counts = Deno.readTextFileSync(`${ROOT}/.ci/run`).split("\n")
    .filter((l) => /^(summary|passed|failed)=/.test(l));
  assert.equal(counts.length, 3, ".ci/run sets summary, passed and failed");
  const dir = await Deno.makeTempDir({ prefix: "ci-summary-" });
  try {
    await Deno.writeTextFile(
      `${dir}/a_test.ts`,
      `Deno.test("passes", () => {});\nDeno.test("fails", () => { throw new Error("no"); });\n`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["test", "--no-config", ...(reporter ? [reporter] : []), "a_test.ts"],
      cwd: dir,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 1);
    const log = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    await Deno.writeTextFile(`${dir}/log`, log);
    const r = await shell(
      `log=${dir}/log\n${counts.join("\n")}\necho "$passed passed, $failed failed"`,
    );
    assert.equal(r.stdout, "1 passed, 1 failed\n", log);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("markdown: '# terminal 2' and '# terminal 2 shows:' (a proxy beside its server)", () => {
  const text = [
    "```sh",
    "deno task x_server   # terminal 1",
    "deno task tcp_proxy --to 127.0.0.1:8888   # terminal 2",
    "printf 'a\\n' | nc -N 127.0.0.1 9000   # terminal 3 prints:",
    "# OK ... a",
    "# terminal 2 shows:",
    "# Client (127.0.0.1:PORT) connected",
    "```",
  ].join("\n");
  const [[, proxy, client]] = shBlocks(text);
  assert.equal(proxy.note, "terminal 2");
  assert.deepEqual(client.expect, ["OK ... a"]);
  assert.deepEqual(client.shows, ["Client (127.0.0.1:PORT) connected"]);
  assert.equal(client.showsIn, 2);
});
