/**
 * Unit tests for lib/deadline.ts: the idle clock, and closeWhenIdle, the
 * deadline that closes a connection whose peer makes no progress.
 *
 * @module
 */

import assert from "node:assert/strict";
import { closeWhenIdle, IdleClock, secondsToMs } from "../lib/deadline.ts";
import { ReadTimeoutError } from "../lib/errors.ts";
import { writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";
import { loopbackPair } from "./fakes.ts";
import { WAIT_MS, withTimeout } from "./helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("secondsToMs: seconds to milliseconds, 0 meaning never", () => {
  assert.equal(secondsToMs(2.5), 2500);
  assert.equal(secondsToMs(0.0016), 2); // whole milliseconds
  assert.equal(secondsToMs(0), undefined);
  assert.equal(secondsToMs(86_400), 86_400_000);
});

Deno.test("IdleClock fires once after its timeout, not when restarted in time, not when stopped", async () => {
  let fired = 0;
  const clock = new IdleClock(60, () => fired++);
  clock.restart();
  for (let i = 0; i < 5; i++) { // restarted every 30 ms for 150 ms: never idle
    await tick(30);
    clock.restart();
  }
  assert.equal(fired, 0);
  assert.equal(clock.expired, false);
  const t0 = performance.now();
  while (fired === 0 && performance.now() - t0 < 2000) await tick(5);
  const ms = performance.now() - t0;
  assert.equal(fired, 1);
  assert.ok(clock.expired);
  assert.ok(ms >= 55 && ms < 500, `fired after ${ms} ms`);
  const stopped = new IdleClock(20, () => fired++);
  stopped.restart();
  stopped.stop();
  await tick(80);
  assert.equal(fired, 1); // and no sweep timer is left running (the op sanitizer checks)
});

Deno.test("IdleClock: a short clock is not held back by a long one's slow sweep; a restart after it fired runs it again", async () => {
  const fired: string[] = [];
  const short = new IdleClock(30, () => fired.push("short"));
  const long = new IdleClock(5000, () => fired.push("long"));
  long.restart(); // a slow sweep (once a second)...
  short.restart(); // ...that a short clock speeds up
  const t0 = performance.now();
  while (fired.length === 0 && performance.now() - t0 < 2000) await tick(5);
  assert.deepEqual(fired, ["short"]);
  assert.ok(performance.now() - t0 < 500, "the short clock did not wait for the slow sweep");
  short.restart();
  assert.equal(short.expired, false);
  while (fired.length === 1 && performance.now() - t0 < 2000) await tick(5);
  assert.deepEqual(fired, ["short", "short"]);
  long.stop(); // the last running clock: the sweep stops (the op sanitizer checks)
});

Deno.test("closeWhenIdle: a silent peer is closed and reported as ReadTimeoutError", async () => {
  const { client, server, close } = await loopbackPair();
  try {
    const lines = new LineReader(server);
    const t0 = performance.now();
    const err = await closeWhenIdle(server, 50, () => lines.readLine()).catch((e) => e);
    assert.ok(err instanceof ReadTimeoutError, String(err));
    assert.equal(err.timeoutMs, 50);
    assert.ok(performance.now() - t0 < 2000);
    // The connection is closed, not just the wait: the peer sees the end of it.
    const n = await withTimeout(client.read(new Uint8Array(1)), WAIT_MS, "EOF", close);
    assert.equal(n, null);
  } finally {
    close();
  }
});

Deno.test("closeWhenIdle around readLine: a line trickled byte by byte still runs the deadline out", async () => {
  const { client, server, close } = await loopbackPair();
  client.setNoDelay(true);
  let stop = false;
  let sent = 0;
  // One byte every 20 ms, never a newline, until the server has closed.
  const trickling = (async () => {
    while (!stop) {
      await tick(20);
      if (stop) break;
      try {
        await writeAll(client, enc.encode("A"));
        sent++;
      } catch {
        break; // the server closed: the late bytes go nowhere
      }
    }
  })();
  try {
    const lines = new LineReader(server);
    const t0 = performance.now();
    await assert.rejects(
      () => closeWhenIdle(server, 150, () => lines.readLine()),
      ReadTimeoutError,
    );
    const ms = performance.now() - t0;
    assert.ok(ms >= 150 && ms < 1000, `timed out after ${ms} ms`);
    assert.ok(sent >= 3, `only ${sent} bytes trickled`);
    // Bytes sent later no longer matter: the reader's connection is closed.
    await assert.rejects(() => lines.readLine());
  } finally {
    stop = true;
    await trickling;
    close();
  }
});

Deno.test("closeWhenIdle: restarts keep a conversation alive past the timeout", async () => {
  const { client, server, close } = await loopbackPair();
  try {
    const lines = new LineReader(server);
    const sending = (async () => {
      for (let i = 0; i < 6; i++) { // a line every 30 ms for 180 ms, with a 100 ms deadline
        await tick(30);
        await writeAll(client, enc.encode(`line ${i}\n`));
      }
      await client.closeWrite();
    })();
    const got = await closeWhenIdle(server, 100, async (idle) => {
      const out: string[] = [];
      for await (const line of lines) {
        idle?.restart(); // a whole line is progress
        out.push(dec.decode(line));
      }
      return out;
    });
    await sending;
    assert.equal(got.length, 6);
  } finally {
    close();
  }
});

Deno.test("closeWhenIdle: a peer that never reads is closed and reported idle", async () => {
  const { server, close } = await loopbackPair();
  try {
    const big = new Uint8Array(32 * 1024 * 1024); // more than the kernel buffers hold
    const t0 = performance.now();
    await assert.rejects(
      () => closeWhenIdle(server, 200, (idle) => writeAll(server, big, idle)),
      ReadTimeoutError,
    );
    assert.ok(performance.now() - t0 < 2000);
  } finally {
    close();
  }
});

Deno.test("closeWhenIdle: no timeout means no clock; other errors pass through unchanged", async () => {
  let closed = 0;
  const conn = { close: () => closed++ };
  assert.equal(
    await closeWhenIdle(conn, undefined, (idle) => Promise.resolve(idle === undefined)),
    true,
  );
  const boom = new Error("boom");
  await assert.rejects(
    () => closeWhenIdle(conn, 10_000, () => Promise.reject(boom)),
    (e) => e === boom,
  );
  assert.equal(await closeWhenIdle(conn, 10_000, () => Promise.resolve("done")), "done");
  assert.equal(closed, 0); // the clock is stopped when the talk ends, whichever way
});
