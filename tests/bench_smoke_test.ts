/**
 * The benchmark is not a test (no timing is asserted anywhere), but it must
 * keep running: one tiny round of it, checking that it prints its table.
 */
import assert from "node:assert/strict";
import { hasCommand, Running, taskCommand } from "./helpers.ts";

Deno.test({
  name: "deno task bench runs: one short round prints the table and the ratios",
  ignore: !hasCommand("cc"),
  async fn() {
    const r = await new Running([
      ...taskCommand("bench"),
      ...["--rounds", "1", "--seconds", "0.2", "--idle", "100", "--hold", "0.1"],
    ]).finished(120_000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /ping-pong, 64 clients \(replies\/s\)\s+[\d,]+\s+[\d,]+/);
    assert.match(r.stdout, /idle client KiB \(100\), connected\s+[\d.]+/);
    assert.match(r.stdout, /idle client KiB \(100\), held 0.1 s\s+[\d.]+/);
    assert.match(r.stdout, /deno select \/ C epoll = [\d.]+×/);
    if (Deno.build.os === "linux") assert.match(r.stdout, /Server CPU time per reply, µs/);
  },
});

Deno.test("deno task bench:chat runs: one small round prints deliveries per second", async () => {
  const r = await new Running([
    ...taskCommand("bench:chat"),
    ...["--lines", "500", "--rounds", "1", "--clients", "5"],
  ]).finished(60_000);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /deno chat_server\s+[\d,]+ deliveries\/s/);
});
