/**
 * What LESSONS.md (and socket_server's top comment) claim in prose, where the docs test cannot
 * run it: an exercise typed into `nc` by hand, a race, a client that holds a server. Each claim
 * is checked in the text, and its behaviour with real processes.
 */
import assert from "node:assert/strict";
import { encoder, hasCommand, LineClient, ROOT, startServer, WAIT_MS } from "./helpers.ts";
import { topComment } from "./docs_runner.ts";

/** Lesson `n` of LESSONS.md, from its `## n.` title to the next `## `, lines joined by spaces. */
function lesson(n: number): string {
  const text = Deno.readTextFileSync(`${ROOT}/LESSONS.md`);
  const section = text.split(/^(?=## )/m).find((s) => s.startsWith(`## ${n}. `));
  assert.ok(section, `no lesson ${n}`);
  return section.replace(/\s+/g, " ");
}

/** Waits, at most `ms`, until `check` holds, looking every 20 ms. */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`no ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test({
  name: "lesson 2: the first line typed into nc after the server dropped it ends nc, silently",
  ignore: !hasCommand("nc"),
}, async () => {
  const text = lesson(2);
  assert.match(text, /Then type a line: it gets no answer, and it ends `nc`/);
  assert.match(text, /watches the socket while it waits/, "what decides it");
  assert.match(text, /fails on the second \(`Broken pipe`\)/, "what a client that does not do");

  const server = await startServer("basic_server", ["--port", "0", "--timeout", "1"]);
  // nc as the lesson starts it; its stdin a pipe that stays open, as a terminal would.
  const nc = new Deno.Command("nc", {
    args: ["127.0.0.1", String(server.port)],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const exited = nc.output();
  const writer = nc.stdin.getWriter();
  const timer = setTimeout(() => nc.kill("SIGKILL"), WAIT_MS);
  try {
    // The server drops the silent client after its --timeout.
    await until(() => /idle for 1 s, disconnected/.test(server.stdout.text), WAIT_MS, "drop");
    await writer.write(encoder.encode("first line\n"));
    // No second line: nc must end on the first one.
    const done = await exited;
    assert.ok(done.signal === null, "nc still ran after the first line (killed at the deadline)");
    assert.equal(done.code, 0, new TextDecoder().decode(done.stderr));
    assert.equal(done.stdout.length, 0, "nc printed something");
  } finally {
    clearTimeout(timer);
    await writer.close().catch(() => {}); // nc has exited: the pipe is broken
    await exited.catch(() => {});
    await server.stop();
  }
});

Deno.test("lesson 3: the naive half-close race is said to be decided by when the FIN comes", () => {
  const text = lesson(3);
  assert.match(text, /What decides it is when the client's FIN comes/);
  // The other side of the race is run by the docs test: a FIN a second later loses nothing.
  assert.match(
    text,
    /\(printf 'a\\nb\\n'; sleep 1\) \| nc -N 127\.0\.0\.1 8888 # OK \.\.\. a # OK \.\.\. b/,
  );
});

Deno.test("socket_server: a client that is never idle holds it, the next waits; the docs say so and name the fix", async () => {
  for (
    const [where, text] of [
      ["LESSONS.md lesson 3", lesson(3)],
      ["socket_server's top comment", topComment("socket_server").join(" ").replace(/\s+/g, " ")],
    ]
  ) {
    assert.match(text, /holds the server for as long as it likes/, where);
    assert.match(text, /the seed's design/, where);
    assert.match(text, /socket_server_with_select(\.ts)?`? does \(lesson 5/, `${where}: the fix`);
  }

  // Under --idle-timeout 1, a client completing a line every 0.4 s holds the server for 2 s.
  const server = await startServer("socket_server", ["--port", "0", "--idle-timeout", "1"]);
  const talker = await LineClient.connect(server.port);
  const next = await LineClient.connect(server.port); // accepted by the kernel: the backlog
  try {
    assert.equal(await talker.ask("line 0"), "OK ... line 0"); // the talker is the one served
    await next.send("me too\n");
    let answeredAt = 0;
    const answer = next.line().then((line) => {
      answeredAt = performance.now();
      return line;
    });
    const started = performance.now();
    for (let i = 1; i <= 5; i++) {
      await new Promise((r) => setTimeout(r, 400)); // the talker's pace: a line every 0.4 s
      assert.equal(await talker.ask(`line ${i}`), `OK ... line ${i}`, "the talker was dropped");
    }
    const held = performance.now() - started;
    assert.ok(held >= 2000, `held ${held} ms`);
    assert.equal(answeredAt, 0, "the next client was answered while the talker talked");
    talker.close();
    const left = performance.now();
    assert.equal(await answer, "OK ... me too");
    assert.ok(answeredAt >= left, "answered before the talker left");
  } finally {
    talker.close();
    next.close();
    await server.stop();
  }
});

Deno.test("lesson 5: the diff it shows is the real one, and the only other differences are names, flags and --quiet", () => {
  const code = (name: string) => {
    const text = Deno.readTextFileSync(`${ROOT}/scripts/${name}.ts`);
    return text.slice(text.indexOf("\nawait runMain")).split("\n");
  };
  const before = code("socket_server");
  const after = code("socket_server_with_select");
  // A line diff (longest common subsequence): what `diff` prints as - and + lines.
  const common = before.map(() => new Array<number>(after.length + 1).fill(0));
  common.push(new Array<number>(after.length + 1).fill(0));
  for (let i = before.length - 1; i >= 0; i--) {
    for (let j = after.length - 1; j >= 0; j--) {
      common[i][j] = before[i] === after[j]
        ? common[i + 1][j + 1] + 1
        : Math.max(common[i + 1][j], common[i][j + 1]);
    }
  }
  const removed: string[] = [], added: string[] = [];
  let i = 0, j = 0;
  while (i < before.length || j < after.length) {
    if (i < before.length && j < after.length && before[i] === after[j]) i++, j++;
    else if (j < after.length && (i === before.length || common[i][j + 1] >= common[i + 1][j])) {
      added.push(after[j++]);
    } else removed.push(before[i++]);
  }
  const text = Deno.readTextFileSync(`${ROOT}/LESSONS.md`);
  const shown = text.split(/^(?=## )/m).find((s) => s.startsWith("## 5. "))!
    .match(/```diff\n([\s\S]*?)```/)![1].split("\n");
  const shownRemoved = shown.filter((l) => l.startsWith("-")).map((l) => l.slice(1));
  const shownAdded = shown.filter((l) => l.startsWith("+")).map((l) => l.slice(1));
  // Its name, and --quiet on the log lines of connect and offline.
  const named = (line: string) => /stopOnSignal\("|args\.quiet|^\s*log\(`Client/.test(line);
  assert.deepEqual(removed.filter((l) => !named(l)), shownRemoved);
  assert.deepEqual(added.filter((l) => !named(l)), shownAdded);
  for (const line of shown.filter((l) => l.startsWith(" "))) {
    assert.ok(before.includes(line.slice(1)), `context line not in the code: ${line}`);
  }
});
