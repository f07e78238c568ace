/**
 * End-to-end: scripts/demo.ts, the tour (`deno task demo`), which runs every
 * server with its client and narrates what happens.
 */
import assert from "node:assert/strict";
import { Running, runTask, taskCommand } from "./helpers.ts";

Deno.test("the tour (deno task demo) runs every pair and exits 0", async () => {
  const r = await new Running(taskCommand("demo")).finished(60_000);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /All \d+ pairs worked/);
  assert.doesNotMatch(r.stdout, /✗/);
});

Deno.test("demo --only with no match is a usage error naming the pairs", async () => {
  const r = await runTask("demo", ["--only", "nothing"]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.doesNotMatch(r.stdout, /All 0 pairs/);
  assert.match(
    r.stderr,
    /^error: no pair's title contains 'nothing'; the pairs are: .*sensor_server \+ sensor_client.*\(see demo --help\)\n$/,
  );
});
