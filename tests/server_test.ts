/**
 * Unit tests for lib/server.ts, in process over loopback: listen's errors,
 * TcpServer's containment of a client's failure, its cap, its accept loop's
 * resilience, the idle clock and per-client stop signal that handle() gives
 * each conversation, and shutdown.
 *
 * @module
 */

import assert from "node:assert/strict";
import { LINE_TOO_LONG, LineTooLongError } from "../lib/errors.ts";
import { closeQuietly, writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/lines.ts";
import { ReplyBatch } from "../lib/many_clients.ts";
import {
  type ClientContext,
  type ConnectionCap,
  listen,
  TcpServer,
  type TcpServerOptions,
} from "../lib/server.ts";
import { WAIT_MS, withTimeout } from "./helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const NL = enc.encode("\n");

/**
 * A TcpServer on a free loopback port whose accept loop hands every
 * connection to `serve`; `logs` holds what it logged. `stop()` shuts it down
 * and waits for the loop.
 */
function serving(
  serve: (conn: Deno.TcpConn, client: ClientContext) => Promise<void>,
  options: Partial<TcpServerOptions> = {},
) {
  const logs: string[] = [];
  const server = new TcpServer(Deno.listen({ hostname: "127.0.0.1", port: 0 }), {
    name: "t",
    handleSignals: false,
    log: (line) => logs.push(line),
    ...options,
  });
  const tasks: Promise<void>[] = [];
  const loop = (async () => {
    for await (const conn of server.accept()) {
      tasks.push(server.handle(conn, (client) => serve(conn, client)));
    }
  })();
  return {
    server,
    port: server.listener.addr.port,
    logs,
    tasks,
    async stop() {
      await server.shutdown();
      await loop;
    },
  };
}

/** A line server's conversation, as the scripts write it: each line echoed back. */
async function echoLines(
  conn: Deno.TcpConn,
  { idle, signal }: ClientContext,
  maxLine?: number,
): Promise<void> {
  const lines = new LineReader(conn, { maxLine, signal });
  const replies = new ReplyBatch(conn, idle);
  try {
    for (let batch; (batch = await lines.readBatch()) !== null;) {
      idle?.restart();
      for (const line of batch) replies.add(line, NL);
      await replies.send();
    }
  } catch (err) {
    if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG);
    throw err;
  }
}

/** A promise and the function that resolves it. */
function signalled(): { promise: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const promise = new Promise<void>((resolve) => fire = resolve);
  return { promise, fire };
}

Deno.test("listen: a port in use is an error that names it and says what to do", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const err = await listen("127.0.0.1", taken.addr.port).then(
      (l) => (l.close(), assert.fail("listened on a port in use")),
      (e) => e,
    );
    assert.ok(err instanceof Error);
    assert.equal(
      err.message,
      `port ${taken.addr.port} is already in use on 127.0.0.1: stop the other server, ` +
        "or pick another --port (--port 0 takes a free one)",
    );
    assert.ok(err.cause instanceof Deno.errors.AddrInUse);
  } finally {
    taken.close();
  }
});

Deno.test("TcpServer contains a handler's error and keeps accepting", async () => {
  let n = 0;
  const s = serving(async (conn) => {
    if (n++ === 0) throw new Error("boom");
    await writeAll(conn, enc.encode("fine\n"));
  });
  const first = await Deno.connect({ port: s.port });
  const firstReply = await new LineReader(first).readLine(); // closed by the server after "boom"
  assert.equal(firstReply, null);
  first.close();
  const second = await Deno.connect({ port: s.port });
  assert.equal(dec.decode((await new LineReader(second).readLine())!), "fine");
  second.close();
  await s.stop();
  assert.ok(s.logs.some((l) => l.endsWith(": boom")), s.logs.join("\n"));
  assert.ok(s.logs.at(-1)!.includes("shut down"));
});

Deno.test("TcpServer turns away clients beyond maxConns with ERR server busy", async () => {
  const started = signalled();
  const release = signalled();
  const s = serving(() => (started.fire(), release.promise), { maxConns: 1 });
  const holder = await Deno.connect({ port: s.port });
  await withTimeout(started.promise, WAIT_MS, "the first client served");
  const extra = await Deno.connect({ port: s.port });
  assert.equal(dec.decode((await new LineReader(extra).readLine())!), "ERR server busy");
  extra.close();
  release.fire();
  holder.close();
  await s.stop();
  assert.ok(s.logs.some((l) => /: turned away, server full \(--max-conns\)$/.test(l)));
});

Deno.test("TcpServer with a shared ConnectionCap takes a place per client and gives it back", async () => {
  let taken = 0;
  const events: string[] = [];
  const cap: ConnectionCap = {
    tryTake: () => taken < 1 ? (taken++, events.push("take"), true) : (events.push("full"), false),
    give: () => (taken--, events.push("give")),
  };
  const started = signalled();
  const release = signalled();
  const s = serving(() => (started.fire(), release.promise), { maxConns: cap });
  const holder = await Deno.connect({ port: s.port });
  await withTimeout(started.promise, WAIT_MS, "the first client served");
  const extra = await Deno.connect({ port: s.port });
  assert.equal(dec.decode((await new LineReader(extra).readLine())!), "ERR server busy");
  extra.close();
  release.fire();
  await Promise.all(s.tasks);
  assert.deepEqual(events, ["take", "full", "give"]);
  holder.close();
  await s.stop();
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

Deno.test("TcpServer.handle: with idleTimeoutMs, a silent client is closed and logged as idle", async () => {
  const s = serving(echoLines, { idleTimeoutMs: 100 });
  const client = await Deno.connect({ port: s.port });
  const peer = `127.0.0.1:${client.localAddr.port}`;
  try {
    const t0 = performance.now();
    // Nothing sent: the server closes the connection, and the client reads its end.
    const n = await withTimeout(
      client.read(new Uint8Array(1)),
      WAIT_MS,
      "the server to close",
      () => client.close(),
    );
    const ms = performance.now() - t0;
    assert.equal(n, null);
    assert.ok(ms >= 90 && ms < 1000, `closed after ${ms} ms`);
    await Promise.all(s.tasks);
    assert.deepEqual(s.logs, [`${peer}: idle for 0.1 s, disconnected`]);
    assert.equal(s.server.connections, 0);
  } finally {
    closeQuietly(client);
    await s.stop();
  }
});

Deno.test("TcpServer.handle: a client that reads slowly but steadily is never idle", async () => {
  const line = new Uint8Array(12 * 1024 * 1024).fill(0x62); // far more than the socket buffers
  const s = serving((conn, client) => echoLines(conn, client, line.length), {
    idleTimeoutMs: 300,
  });
  const client = await Deno.connect({ port: s.port });
  try {
    const sending = writeAll(client, concat(line, NL)).then(() => client.closeWrite());
    let got = 0;
    const buf = new Uint8Array(128 * 1024);
    const t0 = performance.now();
    while (got < line.length + 1 && performance.now() - t0 < 30_000) {
      const n = await client.read(buf);
      if (n === null) break;
      got += n;
      await new Promise((r) => setTimeout(r, 5)); // about 20 MB/s: over 300 ms in all
    }
    await sending;
    assert.equal(got, line.length + 1);
    assert.ok(performance.now() - t0 > 300, "the replies took longer than the idle timeout");
    assert.equal(await client.read(buf), null); // the server's end, after the whole reply
    await Promise.all(s.tasks);
    assert.deepEqual(s.logs, []); // no "idle", no error
  } finally {
    client.close();
    await s.stop();
  }
});

Deno.test("TcpServer.shutdown aborts each client's signal: a waiting LineReader returns null at once", async () => {
  const waiting = signalled();
  let got: Uint8Array | null | undefined;
  const s = serving(async (conn, { signal }) => {
    const lines = new LineReader(conn, { signal });
    const next = lines.readLine();
    waiting.fire();
    got = await next;
  });
  const client = await Deno.connect({ port: s.port });
  await writeAll(client, enc.encode("half a line")); // not a line: the reader keeps waiting
  await withTimeout(waiting.promise, WAIT_MS, "the handler to wait for a line");
  const t0 = performance.now();
  await withTimeout(s.stop(), WAIT_MS, "shutdown");
  const ms = performance.now() - t0;
  // Without the signal, shutdown would wait 1.5 s for the handler, then close it.
  assert.ok(ms < 500, `shutdown took ${ms} ms`);
  assert.equal(got, null);
  assert.equal(s.logs.at(-1), "t: shut down, and closed the 1 client still connected");
  assert.equal(s.logs.length, 1); // a client let go at shutdown is no error
  const n = await withTimeout(client.read(new Uint8Array(1)), WAIT_MS, "EOF", () => client.close());
  assert.equal(n, null);
  client.close();
});

Deno.test("TcpServer.stopAccepting lets connected clients finish, and takes no new one", async () => {
  const started = signalled();
  const release = signalled();
  const s = serving(async (conn) => {
    started.fire();
    await release.promise;
    await writeAll(conn, enc.encode("bye\n"));
  });
  const client = await Deno.connect({ port: s.port });
  await withTimeout(started.promise, WAIT_MS, "the client served");
  const stopping = s.server.stopAccepting();
  // A newcomer is refused, or (closed under a pending accept) reset; never served.
  const newcomer = await Deno.connect({ port: s.port }).then(async (conn) => {
    try {
      return await withTimeout(
        conn.read(new Uint8Array(1)),
        WAIT_MS,
        "newcomer",
        () => conn.close(),
      );
    } catch (err) {
      return err;
    } finally {
      closeQuietly(conn);
    }
  }, (err) => err);
  assert.ok(
    newcomer === null || newcomer instanceof Deno.errors.ConnectionRefused ||
      newcomer instanceof Deno.errors.ConnectionReset,
    String(newcomer),
  );
  release.fire();
  await withTimeout(stopping, WAIT_MS, "stopAccepting");
  assert.equal(dec.decode((await new LineReader(client).readLine())!), "bye");
  client.close();
  await s.stop();
});

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
