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
  // The multi-client servers serve several clients at once, each labelled.
  assert.match(r.stdout, /\(2 clients at once\b[\s\S]*client 2 │ OK \.\.\. humidity 40%/);
  assert.match(r.stdout, /\(3 clients at once\b[\s\S]*client 3 │ OK \.\.\. fan off/);
  // The pool too holds its three clients together: every `connected` before any `is offline`.
  const pool = r.stdout.slice(r.stdout.indexOf("socket_server_threads + socket_client"));
  const connected = [...pool.matchAll(/server +│ \[worker \d\] Client \(\S+\) connected/g)];
  const firstOffline = pool.search(/server +│ \[worker \d\] Client \(\S+\) is offline/);
  assert.equal(connected.length, 3, pool);
  assert.ok(connected.every((m) => m.index! < firstOffline), pool);
  assert.match(r.stdout, /\$ printf 'hello, room\\n' \| deno task chat_client/);
  // Lesson 13: the proxy in the middle, started with the server's port; the client talks to it.
  assert.match(
    r.stdout,
    /\$ deno task tcp_proxy --port 0 --to 127\.0\.0\.1:(\d+)\n[\s\S]*proxy +│ Client \(\S+\) connected, relayed to 127\.0\.0\.1:\1 /,
  );
});

Deno.test("the tour's clients 'at once' are: both connected together, their lines interleaved", async () => {
  // Three runs: it must hold every time, not most times.
  for (let run = 1; run <= 3; run++) {
    const r = await runTask("demo", ["--only", "socket_server_with_select"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const at = (re: RegExp) => {
      const i = r.stdout.search(re);
      assert.ok(i >= 0, `run ${run}: no ${re} in:\n${r.stdout}`);
      return i;
    };
    // The server held both: both `connected` before either `is offline`.
    const connected = [...r.stdout.matchAll(/server +│ Client \(\S+\) connected/g)];
    assert.equal(connected.length, 2, r.stdout);
    const firstOffline = at(/server +│ Client \(\S+\) is offline/);
    assert.ok(connected.every((m) => m.index! < firstOffline), `run ${run}:\n${r.stdout}`);
    // Each sends a line, waits for its reply, pauses, sends another: each client's second reply
    // comes after the other's first.
    const [first1, second1] = [
      at(/client 1 +│ OK \.\.\. pressure 1013 hPa\n/),
      at(/client 1 +│ OK \.\.\. pressure 1012 hPa\n/),
    ];
    const [first2, second2] = [
      at(/client 2 +│ OK \.\.\. humidity 40%\n/),
      at(/client 2 +│ OK \.\.\. humidity 41%\n/),
    ];
    assert.ok(first1 < second2 && first2 < second1, `run ${run}: not interleaved:\n${r.stdout}`);
    assert.match(
      r.stdout,
      /\$ \(echo 'pressure 1013 hPa'; sleep 0\.5; echo 'pressure 1012 hPa'\) \| deno task socket_client --port \d+\n/,
    );
  }
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

Deno.test("the tour interleaves both sides in the order things happened", async () => {
  const r = await runTask("demo", ["--only", "socket_server + socket_client"]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const at = (re: RegExp) => {
    const i = r.stdout.search(re);
    assert.ok(i >= 0, `no ${re} in:\n${r.stdout}`);
    return i;
  };
  // Causal order: the client starts only once the server listens, and prints only once it ran.
  const listening = at(/server +│ listening on 127\.0\.0\.1:\d+/);
  const clientStarts = at(/\$ deno task socket_client --port \d+/);
  const reply = at(/client +│ OK \.\.\. temperature 21\.5/);
  const shutdown = at(/server +│ socket_server: shut down/);
  assert.ok(listening < clientStarts && clientStarts < reply && reply < shutdown, r.stdout);
});

Deno.test("demo --trace shows both sides' reads and writes", async () => {
  const r = await runTask("demo", ["--only", "hello", "--trace"]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /\$ deno task hello_server --port 0 --trace\n/);
  assert.match(
    r.stdout,
    /server +│ trace 127\.0\.0\.1:\d+ \+\d\.\d{3}s write 14 B "Hello client!\\n"/,
  );
  assert.match(
    r.stdout,
    /client +│ trace 127\.0\.0\.1:\d+ \+\d\.\d{3}s read 14 B "Hello client!\\n"/,
  );
  assert.match(
    r.stdout,
    /client +│ trace 127\.0\.0\.1:\d+ \+\d\.\d{3}s write 14 B "Hello Server!\\n"/,
  );
  assert.match(
    r.stdout,
    /server +│ trace 127\.0\.0\.1:\d+ \+\d\.\d{3}s read 14 B "Hello Server!\\n"/,
  );
});

Deno.test("demo --naive: the naive servers break, ours hold, on the same traffic", async () => {
  const r = await new Running([...taskCommand("demo"), "--naive"]).finished(60_000);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const sections = r.stdout.split(/\n(?=━━ )/).slice(1);
  assert.equal(sections.length, 4, r.stdout);
  const [split, long, halfClose, reset] = sections;
  // Deterministic: a split line is answered twice, a long line several times, a reset kills.
  assert.match(split, /naive\/ok_server\.ts +│ OK \.\.\. hel\n +│ OK \.\.\. lo\n/);
  assert.match(split, /socket_server_with_select +│ OK \.\.\. hello\n/);
  assert.match(long, /naive\/ok_server\.ts +│ [2-9] replies/);
  assert.match(long, /socket_server_with_select +│ 1 reply, of 100,008 bytes/);
  assert.match(
    reset,
    /naive\/echo_server\.ts[\s\S]*the server died \(exit 1\): error: Uncaught \(in promise\) ConnectionReset/,
  );
  assert.match(reset, /socket_server_with_select[\s\S]*│ OK \.\.\. next\n/);
  for (const s of [split, long, reset]) assert.match(s, /✓ the naive server broke; ours did not/);
  // A race the naive server nearly always loses (tests/naive_test.ts retries it); ours never does.
  assert.match(halfClose, /socket_server_with_select +│ OK \.\.\. a\n +│ OK \.\.\. b\n/);
  assert.match(halfClose, /✓ the naive server broke|the naive server was lucky/);
  assert.doesNotMatch(r.stdout, /✗/);
});

Deno.test("demo --naive takes no --only or --trace: a usage error, not a silent ignore", async () => {
  for (const extra of [["--only", "sensor"], ["--trace"]]) {
    const r = await runTask("demo", ["--naive", ...extra]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^error: --naive runs a tour of its own: no --only or --trace/);
  }
});
