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
      ...["--rounds", "1", "--seconds", "0.2", "--flood-seconds", "0.7"],
      ...["--idle", "100", "--burst", "20", "--hold", "0.1"],
    ]).finished(180_000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const table = (title: string) => r.stdout.slice(r.stdout.indexOf(title)).split("\n\n")[0];
    // A row per server, a number per column.
    assert.match(table("Throughput"), /^deno select +[\d,]+ +[\d,.]+ +[\d,.]+ +[\d,.]+$/m);
    assert.match(table("100 clients flood"), /^deno sensor( +[\d,.]+){6}$/m);
    assert.match(table("Memory per client"), /idle, held +burst, conn\. +burst, held/);
    assert.match(table("Memory per client"), /^deno threads( +[\d,.]+){4}$/m);
    assert.match(r.stdout, /deno select \/ C epoll = [\d.]+×/);
    assert.match(r.stdout, /deno sensor, closed flood: probe worst: [\d.]+ ms \(target ≤ 150 ms\)/);
    if (Deno.build.os === "linux") assert.match(r.stdout, /Server CPU time per reply, µs/);
  },
});

Deno.test({
  name: "deno task bench:http runs: one short round prints requests per second and the ratio",
  ignore: !hasCommand("cc"),
  async fn() {
    const r = await new Running([
      ...taskCommand("bench:http"),
      ...["--rounds", "1", "--seconds", "0.3", "--clients", "5"],
    ]).finished(60_000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /deno http_server +[\d,]+ requests\/s/);
    if (hasCommand("node")) assert.match(r.stdout, /deno\/node: [\d.]+x the requests\/s/);
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

Deno.test("deno task bench:proxy runs: one small round prints both medians and the ratio", async () => {
  const r = await new Running([...taskCommand("bench:proxy"), "--mib", "8", "--rounds", "1"])
    .finished(60_000);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^direct +[\d,]+ MiB\/s \(median\)$/m);
  assert.match(r.stdout, /^through proxy +[\d,]+ MiB\/s \(median\)$/m);
  assert.match(r.stdout, /^proxy \/ direct = [\d.]+×$/m);
});
