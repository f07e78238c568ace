/**
 * Unit tests for lib/retry.ts: connecting with retries, backoff and jitter,
 * what is retried and what is not, and stopping.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  backoffDelay,
  ConnectTimeoutError,
  connectWithRetry,
  isRetryable,
  RetriesExhaustedError,
  type RetryInfo,
  sleep,
} from "../lib/retry.ts";

function refused(): Promise<Deno.TcpConn> {
  return Promise.reject(new Deno.errors.ConnectionRefused("Connection refused (os error 111)"));
}

Deno.test("connectWithRetry retries refused attempts, reports each, then connects", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let calls = 0;
  const seen: RetryInfo[] = [];
  const conn = await connectWithRetry({
    hostname: "127.0.0.1",
    port: listener.addr.port,
    attempts: 5,
    baseDelayMs: 1,
    onRetry: (info) => seen.push(info),
    connect: (o) => ++calls < 3 ? refused() : Deno.connect(o),
  });
  conn.close();
  listener.close();
  assert.equal(calls, 3);
  assert.deepEqual(seen.map((s) => s.attempt), [1, 2]);
  assert.ok(seen.every((s) => s.error instanceof Deno.errors.ConnectionRefused));
});

Deno.test("connectWithRetry gives up after the last attempt", async () => {
  let calls = 0;
  const seen: RetryInfo[] = [];
  const err = await connectWithRetry({
    hostname: "127.0.0.1",
    port: 9,
    attempts: 3,
    baseDelayMs: 1,
    hint: "start it with deno task socket_server",
    onRetry: (info) => seen.push(info),
    connect: () => (calls++, refused()),
  }).catch((e) => e);
  assert.ok(err instanceof RetriesExhaustedError);
  assert.equal(err.attempts, 3);
  assert.equal(calls, 3);
  assert.match(err.message, /127\.0\.0\.1:9 after 3 attempts/);
  assert.match(err.message, /start it with deno task socket_server$/);
  assert.equal(seen.at(-1)!.delayMs, undefined);
});

Deno.test("connectWithRetry does not retry an unknown host", async () => {
  let calls = 0;
  const lookup = new Error("failed to lookup address information: Name or service not known");
  await assert.rejects(
    () =>
      connectWithRetry({
        hostname: "no.such.host.invalid",
        port: 80,
        connect: () => (calls++, Promise.reject(lookup)),
      }),
    (e) => e === lookup,
  );
  assert.equal(calls, 1);
});

Deno.test("connectWithRetry gives up on an attempt that hangs, and says so; IPv6 in brackets", async () => {
  let calls = 0;
  // A connect that never answers (a firewall dropping packets) until its signal aborts.
  const hang = (o: Deno.ConnectOptions & { signal?: AbortSignal }) => {
    calls++;
    return new Promise<Deno.TcpConn>((_, reject) => {
      o.signal!.addEventListener("abort", () => reject(o.signal!.reason), { once: true });
    });
  };
  const err = await connectWithRetry({
    hostname: "::1",
    port: 9,
    attempts: 2,
    baseDelayMs: 1,
    connectTimeoutMs: 20,
    connect: hang,
  }).catch((e) => e);
  assert.ok(err instanceof RetriesExhaustedError, String(err));
  assert.equal(calls, 2);
  assert.equal(
    err.message,
    "could not connect to [::1]:9 after 2 attempts: no answer within 0.02 s (--timeout)",
  );
  assert.ok(err.cause instanceof Deno.errors.TimedOut);
  assert.ok(err.cause instanceof ConnectTimeoutError);
  assert.equal(err.cause.message, "no answer from [::1]:9 within 0.02 s (--timeout)");
});

Deno.test("connectWithRetry with connectTimeoutMs 0 puts no deadline on an attempt", async () => {
  const seen: (AbortSignal | undefined)[] = [];
  const conn = await connectWithRetry({
    hostname: "127.0.0.1",
    port: 9,
    connectTimeoutMs: 0,
    connect: (o) => {
      seen.push(o.signal);
      return Promise.resolve({ close() {} } as Deno.TcpConn);
    },
  });
  conn.close();
  assert.deepEqual(seen, [undefined]);
});

Deno.test("connectWithRetry stops waiting at once when aborted", async () => {
  const controller = new AbortController();
  const started = performance.now();
  const pending = connectWithRetry({
    hostname: "127.0.0.1",
    port: 9,
    attempts: 10,
    baseDelayMs: 60_000, // would wait a minute
    signal: controller.signal,
    onRetry: () => controller.abort(new Error("stopped by user")),
    connect: refused,
  });
  await assert.rejects(() => pending, /stopped by user/);
  assert.ok(performance.now() - started < 5000);
});

Deno.test("connectWithRetry against a real closed port", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  await assert.rejects(
    () => connectWithRetry({ hostname: "127.0.0.1", port, attempts: 2, baseDelayMs: 5 }),
    RetriesExhaustedError,
  );
});

Deno.test("backoffDelay doubles, caps and jitters between half and all", () => {
  assert.equal(backoffDelay(1, 100, 1000, () => 1), 100);
  assert.equal(backoffDelay(2, 100, 1000, () => 1), 200);
  assert.equal(backoffDelay(10, 100, 1000, () => 1), 1000);
  assert.equal(backoffDelay(10, 100, 1000, () => 0), 500);
  assert.ok(isRetryable(new Deno.errors.TimedOut("t")));
  assert.ok(!isRetryable(new Deno.errors.NotCapable("no")));
});

Deno.test("isRetryable: what waiting can cure, and nothing else", () => {
  for (
    const err of [
      new Deno.errors.ConnectionRefused("x"),
      new Deno.errors.ConnectionReset("x"),
      new Deno.errors.ConnectionAborted("x"),
      new Deno.errors.TimedOut("x"),
      new Deno.errors.NetworkUnreachable("x"),
      new DOMException("signal timed out", "TimeoutError"),
    ]
  ) assert.ok(isRetryable(err), String(err));
  for (
    const err of [
      new Error("failed to lookup address information"),
      new Deno.errors.PermissionDenied("x"),
      new DOMException("aborted", "AbortError"),
      "a string",
    ]
  ) assert.ok(!isRetryable(err), String(err));
});

Deno.test("sleep waits, and rejects with the signal's reason when it aborts", async () => {
  const t0 = performance.now();
  await sleep(20);
  assert.ok(performance.now() - t0 >= 15);
  const controller = new AbortController();
  const waiting = sleep(60_000, controller.signal);
  controller.abort(new Error("enough"));
  await assert.rejects(() => waiting, /enough/);
  await assert.rejects(() => sleep(1, AbortSignal.abort(new Error("already"))), /already/);
});
