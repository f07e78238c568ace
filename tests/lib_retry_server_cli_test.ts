import assert from "node:assert/strict";
import {
  backoffDelay,
  connectWithRetry,
  isRetryable,
  RetriesExhaustedError,
  type RetryInfo,
} from "../lib/retry.ts";
import { describeError, parseCli, parsePort } from "../lib/cli.ts";
import { closeQuietly, formatAddress, TcpServer } from "../lib/server.ts";
import { writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

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
    onRetry: (info) => seen.push(info),
    connect: () => (calls++, refused()),
  }).catch((e) => e);
  assert.ok(err instanceof RetriesExhaustedError);
  assert.equal(err.attempts, 3);
  assert.equal(calls, 3);
  assert.match(err.message, /127\.0\.0\.1:9 after 3 attempts/);
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

Deno.test("parseCli reads defaults, flags, repeatable values and IPv6 hosts", () => {
  const spec = {
    name: "t",
    summary: "test",
    options: {
      host: { kind: "host", default: "127.0.0.1", help: "h" },
      port: { kind: "port", short: "p", default: 8888, help: "p" },
      message: { kind: "strings", short: "m", help: "m" },
      timeout: { kind: "seconds", default: 10, help: "t" },
      forever: { kind: "boolean", help: "f" },
    },
  } as const;
  const a = parseCli({ ...spec, args: [] });
  assert.deepEqual(a, { host: "127.0.0.1", port: 8888, message: [], timeout: 10, forever: false });
  const b = parseCli({
    ...spec,
    args: ["--host", "[::1]", "-p", "0", "-m", "x", "-m", "y", "--timeout", "0.5", "--forever"],
  });
  assert.deepEqual(b, { host: "::1", port: 0, message: ["x", "y"], timeout: 0.5, forever: true });
});

Deno.test("parsePort accepts 0-65535 only", () => {
  assert.equal(parsePort("0"), 0);
  assert.equal(parsePort("65535"), 65535);
  for (const bad of ["abc", "70000", "-1", "1.5", "", "65536"]) {
    assert.equal(parsePort(bad), undefined);
  }
});

Deno.test("describeError turns Deno errors into advice", () => {
  assert.match(
    describeError(new Deno.errors.ConnectionRefused("x"), "127.0.0.1:1"),
    /refused by 127\.0\.0\.1:1: is the server running/,
  );
  assert.match(
    describeError(
      new Error("failed to lookup address information: Name or service not known"),
      "nope:80",
    ),
    /cannot resolve host nope:80/,
  );
  assert.match(
    describeError(
      new Deno.errors.NotCapable(
        'Requires net access to "10.0.0.1:80", run again with the --allow-net flag',
      ),
    ),
    /--allow-net=10\.0\.0\.1/,
  );
});

Deno.test("formatAddress brackets IPv6", () => {
  assert.equal(formatAddress({ transport: "tcp", hostname: "127.0.0.1", port: 1 }), "127.0.0.1:1");
  assert.equal(formatAddress({ transport: "tcp", hostname: "::1", port: 2 }), "[::1]:2");
});

Deno.test("TcpServer contains a handler's error and keeps accepting", async () => {
  const logs: string[] = [];
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const server = new TcpServer(listener, {
    name: "t",
    handleSignals: false,
    log: (l) => logs.push(l),
  });
  const port = listener.addr.port;
  const serving = (async () => {
    let n = 0;
    for await (const conn of server.accept()) {
      server.handle(conn, async (conn) => {
        if (n++ === 0) throw new Error("boom");
        await writeAll(conn, enc.encode("fine\n"));
      });
    }
  })();
  const first = await Deno.connect({ port });
  const firstReply = await new LineReader(first).readLine(); // closed by the server after "boom"
  assert.equal(firstReply, null);
  first.close();
  const second = await Deno.connect({ port });
  assert.equal(dec.decode((await new LineReader(second).readLine())!), "fine");
  second.close();
  await server.shutdown();
  await serving;
  assert.ok(logs.some((l) => l.endsWith(": boom")), logs.join("\n"));
  assert.ok(logs.at(-1)!.includes("shut down"));
});

Deno.test("TcpServer turns away clients beyond maxConns with ERR server busy", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const server = new TcpServer(listener, {
    name: "t",
    maxConns: 1,
    handleSignals: false,
    log: () => {},
  });
  const port = listener.addr.port;
  let release!: () => void;
  const released = new Promise<void>((r) => release = r);
  const serving = (async () => {
    for await (const conn of server.accept()) server.handle(conn, () => released);
  })();
  const holder = await Deno.connect({ port });
  // Wait until the server counts the first client before the second arrives.
  for (let i = 0; i < 2000 && server.connections < 1; i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const extra = await Deno.connect({ port });
  assert.equal(dec.decode((await new LineReader(extra).readLine())!), "ERR server busy");
  extra.close();
  release();
  holder.close();
  await server.shutdown();
  await serving;
  closeQuietly(listener);
});

/** A listener whose accept() fails with `code` `failures` times, then accepts from `real`. */
function failingListener(real: Deno.TcpListener, code: string, failures: number) {
  let left = failures;
  return new Proxy(real, {
    get(target, key) {
      if (key === "accept") {
        return () => {
          if (left-- > 0) {
            return Promise.reject(Object.assign(new Error(`accept failed: ${code}`), { code }));
          }
          return target.accept();
        };
      }
      const value = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test("TcpServer: 200 clients gone before accept() cost nothing and log nothing", async () => {
  const real = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const logs: string[] = [];
  const server = new TcpServer(failingListener(real, "ENOTCONN", 200), {
    name: "t",
    handleSignals: false,
    log: (l) => logs.push(l),
  });
  const t0 = performance.now();
  const client = await Deno.connect({ port: real.addr.port });
  for await (const conn of server.accept()) {
    await server.handle(conn, () => writeAll(conn, enc.encode("hi\n")));
    break;
  }
  const ms = performance.now() - t0;
  assert.equal(dec.decode((await new LineReader(client).readLine())!), "hi");
  client.close();
  await server.shutdown();
  assert.ok(ms < 500, `the honest client waited ${ms} ms`);
  assert.deepEqual(logs.filter((l) => !l.includes("shut down")), []);
});

Deno.test("TcpServer: out of file descriptors, it pauses, logs about once a second, recovers", async () => {
  const real = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const logs: string[] = [];
  // 10 failures with pauses of 5, 10, 20, ... ms, capped at 1 s: about 3.3 s.
  const server = new TcpServer(failingListener(real, "EMFILE", 10), {
    name: "t",
    handleSignals: false,
    log: (l) => logs.push(l),
  });
  const client = await Deno.connect({ port: real.addr.port });
  const t0 = performance.now();
  for await (const conn of server.accept()) {
    server.handle(conn, () => Promise.resolve());
    break;
  }
  const ms = performance.now() - t0;
  client.close();
  await server.shutdown();
  const failed = logs.filter((l) => l.startsWith("accept failed"));
  assert.ok(ms > 2000 && ms < 8000, `accepted after ${ms} ms`);
  assert.ok(failed.length >= 2 && failed.length <= Math.ceil(ms / 1000) + 1, logs.join("\n"));
  assert.match(failed[0], /accept failed 1 time\(s\): accept failed: EMFILE; pausing 5 ms/);
  assert.ok(logs.some((l) => /^accepting again/.test(l)), logs.join("\n"));
});
