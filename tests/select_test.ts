/**
 * End-to-end: scripts/socket_server_with_select.ts, many clients on one
 * thread, as a real process: what it logs, and a slow reader of a big reply
 * that is busy, not idle. What it shares with the worker pool (many clients
 * at once, misbehaving, capped) is in tests/servers_test.ts.
 */
import assert from "node:assert/strict";
import { encoder, LineClient, startServer, withTimeout } from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

Deno.test("socket_server_with_select logs clients connecting and going offline", async () => {
  const server = await startServer("socket_server_with_select");
  try {
    const c = await LineClient.connect(server.port);
    assert.equal(await c.ask("x"), "OK ... x");
    c.close();
    await server.stdout.waitFor(
      /Client \(127\.0\.0\.1:\d+\) connected\nClient \(127\.0\.0\.1:\d+\) is offline/,
    );
  } finally {
    await server.stop();
  }
});

Deno.test("socket_server_with_select: a client taking a 16 MiB reply slowly is busy, not idle", async () => {
  const server = await startServer("socket_server_with_select", [
    "--port",
    "0",
    "--idle-timeout",
    "1",
    "--max-line",
    String(16 * 1024 * 1024),
  ]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const line = new Uint8Array(16 * 1024 * 1024 - 1).fill(0x61);
    const sending = writeAll(conn, line).then(() => writeAll(conn, encoder.encode("\n")));
    // Read the reply in 256 KiB sips every 30 ms: longer than the 1 s timeout
    // in all, but a few bytes of progress in every second.
    const expected = 7 + line.length + 1;
    let got = 0;
    const buf = new Uint8Array(256 * 1024);
    const t0 = performance.now();
    while (got < expected && performance.now() - t0 < 60_000) {
      const n = await withTimeout(conn.read(buf), 10_000, "reply");
      if (n === null) break;
      got += n;
      await new Promise((r) => setTimeout(r, 30));
    }
    await sending;
    assert.equal(got, expected, `got ${got} of ${expected} bytes`);
    assert.ok(performance.now() - t0 > 1000, "the reply should take longer than the timeout");
    assert.doesNotMatch(server.stdout.text, /idle for/);
  } finally {
    conn.close();
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
  }
});
