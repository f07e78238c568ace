/**
 * Unit tests for lib/signals.ts, in a child process (a second signal exits
 * the process, which would end this test run): SIGINT, SIGTERM and SIGHUP
 * stop alike; two signals close together are one Ctrl+C delivered twice, and
 * a second one later means "exit now", said in a last line, exit code 130.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Running } from "../scripts/demo/processes.ts";
import { EXIT_INTERRUPTED, forcedExitLine } from "../lib/signals.ts";

const SIGNALS = new URL("../lib/signals.ts", import.meta.url).href;
const CLI = new URL("../lib/cli.ts", import.meta.url).href;
// Counts stop() calls, and ends itself with code 3 after 1.5 s unless a second signal exits it.
const CHILD = `
  import { onStopSignal } from "${SIGNALS}";
  let stops = 0;
  onStopSignal(() => console.log("stop " + ++stops), { name: "child", connections: () => 2 });
  console.log("ready");
  setTimeout(() => { console.log("still running after " + stops + " stop(s)"); Deno.exit(3); }, 1500);
`;

function child(): Running {
  return new Running(["eval", CHILD], "null");
}

Deno.test("onStopSignal: two signals 100 ms apart are one Ctrl+C: stop is called once, no exit", async () => {
  const proc = child();
  await proc.stdout.waitFor("ready");
  proc.kill("SIGINT");
  await proc.stdout.waitFor("stop 1");
  await new Promise((resolve) => setTimeout(resolve, 100)); // the gap is the test
  proc.kill("SIGTERM");
  const done = await proc.finished();
  assert.equal(done.code, 3, done.stdout + done.stderr); // ended by its own timer
  assert.match(done.stdout, /still running after 1 stop\(s\)/);
});

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  Deno.test(`onStopSignal: ${signal} calls stop, once`, async () => {
    const proc = child();
    await proc.stdout.waitFor("ready");
    proc.kill(signal);
    const done = await proc.finished();
    assert.equal(done.signal, null, `killed by ${signal}: ${done.stderr}`);
    assert.equal(done.code, 3, done.stdout + done.stderr); // ended by its own timer
    assert.match(done.stdout, /still running after 1 stop\(s\)/);
  });
}

Deno.test("onStopSignal: a second signal later than 300 ms exits at once with code 130, and says so", async () => {
  for (const [first, second] of [["SIGINT", "SIGINT"], ["SIGTERM", "SIGHUP"]] as const) {
    const proc = child();
    await proc.stdout.waitFor("ready");
    proc.kill(first);
    await proc.stdout.waitFor("stop 1");
    await new Promise((resolve) => setTimeout(resolve, 500)); // the gap is the test
    proc.kill(second);
    const done = await proc.finished();
    assert.equal(done.code, EXIT_INTERRUPTED, done.stdout + done.stderr); // 3: its own timer
    assert.doesNotMatch(done.stdout, /stop 2/);
    assert.equal(
      done.stdout.trimEnd().split("\n").at(-1),
      forcedExitLine(second, {
        name: "child",
        connections: () => 2,
      }),
    );
  }
});

Deno.test("forcedExitLine names the signal and who is cut off", () => {
  const two = { name: "socket_server", connections: () => 2 };
  assert.equal(
    forcedExitLine("SIGINT", two),
    "socket_server: second Ctrl+C, exiting at once (2 clients cut off)",
  );
  assert.equal(
    forcedExitLine("SIGHUP", { name: "x", connections: () => 1 }),
    "x: second stop signal (SIGHUP), exiting at once (1 client cut off)",
  );
  assert.equal(forcedExitLine("SIGTERM"), "second stop signal (SIGTERM), exiting at once");
  assert.equal(EXIT_INTERRUPTED, 130);
});

Deno.test("a second signal while a clean exit still flushes its log exits 130, as its last line says", async () => {
  // The first signal's exit waits for a hook (a log nobody reads yet) that finishes 50 ms after
  // the second signal, as a reader coming back would: both exits then end together.
  const code = `
    import { beforeExit } from "${CLI}";
    import { exitSoon, onStopSignal } from "${SIGNALS}";
    let signals = 0;
    const flushed = new Promise((resolve) => {
      Deno.addSignalListener("SIGINT", () => ++signals === 2 && setTimeout(resolve, 50));
    });
    beforeExit(() => flushed);
    onStopSignal(() => exitSoon(0, 1800), { name: "child" });
    console.log("ready");
    setTimeout(() => Deno.exit(3), 5000);
  `;
  const proc = new Running(["eval", code], "null");
  await proc.stdout.waitFor("ready");
  proc.kill("SIGINT");
  await new Promise((resolve) => setTimeout(resolve, 500)); // later than one Ctrl+C delivered twice
  proc.kill("SIGINT");
  const done = await proc.finished();
  assert.match(done.stdout, /child: second Ctrl\+C, exiting at once/);
  assert.equal(done.code, EXIT_INTERRUPTED, done.stdout + done.stderr);
});
