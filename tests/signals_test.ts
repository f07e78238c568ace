/**
 * Unit tests for lib/signals.ts, in a child process (a second signal exits
 * the process, which would end this test run): two signals close together are
 * one Ctrl+C delivered twice, and a second one later means "exit now".
 *
 * @module
 */

import assert from "node:assert/strict";
import { Running } from "../lib/process.ts";

const SIGNALS = new URL("../lib/signals.ts", import.meta.url).href;
// Counts stop() calls, and ends itself with code 3 after 1.5 s unless a second signal exits it.
const CHILD = `
  import { onStopSignal } from "${SIGNALS}";
  let stops = 0;
  onStopSignal(() => console.log("stop " + ++stops));
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

Deno.test("onStopSignal: a second signal later than 300 ms exits at once with code 0", async () => {
  const proc = child();
  await proc.stdout.waitFor("ready");
  proc.kill("SIGINT");
  await proc.stdout.waitFor("stop 1");
  await new Promise((resolve) => setTimeout(resolve, 500)); // the gap is the test
  proc.kill("SIGINT");
  const done = await proc.finished();
  assert.equal(done.code, 0, done.stdout + done.stderr); // 3 would be the child's own timer
  assert.doesNotMatch(done.stdout, /stop 2/);
});
