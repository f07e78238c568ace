/**
 * Unit tests for lib/server.ts, in process over loopback: the named calls a
 * server's own accept loop makes (whyCannotListen, acceptAgain, OpenClients,
 * turnAway, closeWhenIdleFor, whyClientFailed). Each test writes the loop as
 * the scripts do, so the loop itself is under test too.
 *
 * @module
 */

import assert from "node:assert/strict";
import { secondsToMs } from "../lib/cli.ts";
import { closeQuietly, LineTooLongError, writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/io.ts";
import { BatchLineReader, ReplyBatch } from "../lib/many_clients.ts";
import {
  acceptAgain,
  closeWhenIdleFor,
  IdleClock,
  LINE_TOO_LONG,
  OpenClients,
  shutDownLine,
  turnAway,
  whyCannotListen,
  whyClientFailed,
} from "../lib/server.ts";
import { WAIT_MS, withTimeout } from "./helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const NL = enc.encode("\n");
const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A line server as the scripts write it, on a free loopback port: an accept
 * loop, and each line echoed back. `logs` holds what it logged; `stop()` is
 * what Ctrl+C does (close the listener, `closeAll`), and waits for the loop.
 */
function echoServer(options: { idleMs?: number; maxLine?: number; maxConns?: number } = {}) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const clients = new OpenClients();
  const logs: string[] = [];
  const say = (line: string) => logs.push(line);
  const served: Promise<void>[] = [];
  const serve = async (conn: Deno.TcpConn) => {
    const peer = `127.0.0.1:${(conn.remoteAddr as Deno.NetAddr).port}`;
    const stop = clients.add(conn);
    const idle = closeWhenIdleFor(conn, options.idleMs);
    try {
      const lines = new BatchLineReader(conn, { maxLine: options.maxLine, signal: stop });
      const replies = new ReplyBatch(conn, idle);
      for (let batch; (batch = await lines.readBatch()) !== null;) {
        idle?.restart();
        for (const line of batch) replies.add(line, NL);
        await replies.send();
      }
    } catch (err) {
      if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG).catch(() => {});
      if (!stop.aborted) say(`${peer}: ${whyClientFailed(err, idle)}`);
    } finally {
      idle?.stop();
      clients.close(conn);
    }
  };
  const loop = (async () => {
    while (true) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (await acceptAgain(err, say)) continue;
        break;
      }
      if (clients.size >= (options.maxConns ?? Infinity)) {
        turnAway(conn, say);
        continue;
      }
      served.push(serve(conn));
    }
  })();
  return {
    port: listener.addr.port,
    clients,
    logs,
    served,
    async stop() {
      closeQuietly(listener);
      say(shutDownLine("t", await clients.closeAll()));
      await loop;
    },
  };
}

Deno.test("whyCannotListen: a port in use is an error that names it and says what to do", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    let err: Error | undefined;
    try {
      Deno.listen({ hostname: "127.0.0.1", port: taken.addr.port }).close();
    } catch (e) {
      err = await whyCannotListen(e, "127.0.0.1", taken.addr.port);
    }
    assert.ok(err, "listened on a port in use");
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

Deno.test("acceptAgain: false once the listener is closed, true at once for a client gone from the backlog", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  listener.close();
  const closed = await listener.accept().then(() => undefined, (err) => err);
  assert.equal(await acceptAgain(closed), false);
  const logs: string[] = [];
  const t0 = performance.now();
  for (let i = 0; i < 200; i++) {
    const gone = Object.assign(new Error("Socket is not connected"), { code: "ENOTCONN" });
    assert.equal(await acceptAgain(gone, (l) => logs.push(l)), true);
  }
  const ms = performance.now() - t0;
  assert.ok(ms < 500, `200 clients gone before accept() cost ${ms} ms`);
  assert.deepEqual(logs, []);
});

Deno.test("acceptAgain: out of file descriptors, it pauses, says so about once a second, then 'accepting again'", async () => {
  const logs: string[] = [];
  const say = (l: string) => logs.push(l);
  const t0 = performance.now();
  // 10 failures with pauses of 5, 10, 20, ... ms, capped at 1 s: about 3.3 s.
  for (let i = 0; i < 10; i++) {
    const err = Object.assign(new Error("accept failed: EMFILE"), { code: "EMFILE" });
    assert.equal(await acceptAgain(err, say), true);
  }
  const ms = performance.now() - t0;
  await takeOneClient(); // a client taken: the pause is over
  const failed = logs.filter((l) => l.startsWith("accept failed"));
  assert.ok(ms > 2000 && ms < 8000, `10 failures took ${ms} ms`);
  assert.ok(failed.length >= 2 && failed.length <= Math.ceil(ms / 1000) + 1, logs.join("\n"));
  assert.match(failed[0], /accept failed 1 time\(s\): accept failed: EMFILE; pausing 5 ms/);
  assert.equal(logs.at(-1), "accepting again");
  // The next failure pauses 5 ms again: the pause was reset.
  const t1 = performance.now();
  await acceptAgain(Object.assign(new Error("EMFILE"), { code: "EMFILE" }), say);
  assert.ok(performance.now() - t1 < 500, "the pause was not reset");
  await takeOneClient(); // (and the episode ends, for the tests after this one)
});

/** Accepts one real client into an OpenClients, and closes it. */
async function takeOneClient(): Promise<void> {
  const clients = new OpenClients();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ port: listener.addr.port });
  const conn = await listener.accept();
  clients.add(conn);
  clients.close(conn);
  client.close();
  listener.close();
}

Deno.test("OpenClients.closeAll aborts each client's signal: a waiting LineReader returns null at once", async () => {
  const s = echoServer();
  const client = await Deno.connect({ port: s.port });
  await writeAll(client, enc.encode("half a line")); // not a line: the reader keeps waiting
  const until = Date.now() + WAIT_MS;
  while (s.clients.size === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  const t0 = performance.now();
  await withTimeout(s.stop(), WAIT_MS, "shutdown");
  const ms = performance.now() - t0;
  // Without the signal, shutdown would wait 1.2 s for the client, then close it.
  assert.ok(ms < 500, `shutdown took ${ms} ms`);
  await Promise.all(s.served);
  assert.match(s.logs.at(-1)!, /t: shut down, and closed the 1 client still connected/);
  assert.equal(s.logs.length, 1); // a client let go at shutdown is no error
  const n = await withTimeout(client.read(new Uint8Array(1)), WAIT_MS, "EOF", () => client.close());
  assert.equal(n, null);
  client.close();
});

Deno.test("OpenClients: whenEmpty resolves when the last client is closed", async () => {
  const clients = new OpenClients();
  await withTimeout(clients.whenEmpty(), WAIT_MS, "whenEmpty with no client");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const a = await Deno.connect({ port: listener.addr.port });
  const b = await Deno.connect({ port: listener.addr.port });
  const [ca, cb] = [await listener.accept(), await listener.accept()];
  clients.add(ca);
  clients.add(cb);
  let emptied = false;
  const empty = clients.whenEmpty().then(() => emptied = true);
  clients.close(ca);
  for (let i = 0; i < 3; i++) await Promise.resolve(); // a wrong resolve would have run by now
  assert.equal(emptied, false, "resolved with a client still open");
  clients.close(cb);
  await withTimeout(empty, WAIT_MS, "whenEmpty");
  a.close();
  b.close();
  listener.close();
});

Deno.test("turnAway: a client over the cap gets ERR server busy and is closed; the others are served", async () => {
  const s = echoServer({ maxConns: 1 });
  const first = await Deno.connect({ port: s.port });
  try {
    await writeAll(first, enc.encode("one\n"));
    assert.equal(dec.decode((await new LineReader(first).readLine())!), "one");
    const second = await Deno.connect({ port: s.port });
    const reply = await withTimeout(new LineReader(second).readLine(), WAIT_MS, "busy line");
    assert.equal(dec.decode(reply!), "ERR server busy");
    assert.equal(await new LineReader(second).readLine(), null);
    second.close();
    assert.match(s.logs.join("\n"), /turned away, server full \(--max-conns\)/);
  } finally {
    first.close();
    await s.stop();
  }
});

Deno.test("closeWhenIdleFor: a silent client is closed and logged as idle", async () => {
  const s = echoServer({ idleMs: 100 });
  const client = await Deno.connect({ port: s.port });
  const peer = `127.0.0.1:${client.localAddr.port}`;
  try {
    const t0 = performance.now();
    const n = await withTimeout(
      client.read(new Uint8Array(1)),
      WAIT_MS,
      "the server to close",
      () => client.close(),
    );
    const ms = performance.now() - t0;
    assert.equal(n, null);
    assert.ok(ms >= 90 && ms < 1000, `closed after ${ms} ms`);
    await Promise.all(s.served);
    assert.deepEqual(s.logs, [`${peer}: idle for 0.1 s, disconnected`]);
    assert.equal(s.clients.size, 0);
  } finally {
    closeQuietly(client);
    await s.stop();
  }
});

Deno.test("closeWhenIdleFor: a client that reads slowly but steadily is never idle", async () => {
  const line = new Uint8Array(12 * 1024 * 1024).fill(0x62); // far more than the socket buffers
  const s = echoServer({ idleMs: 300, maxLine: line.length });
  const client = await Deno.connect({ port: s.port });
  try {
    const sending = writeAll(client, line).then(() => writeAll(client, NL)).then(() =>
      client.closeWrite()
    );
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
    await Promise.all(s.served);
    assert.deepEqual(s.logs, []); // no "idle", no error
  } finally {
    client.close();
    await s.stop();
  }
});

Deno.test("whyClientFailed: one line for a reset, a line too long, an idle clock run out", () => {
  assert.equal(
    whyClientFailed(new Deno.errors.ConnectionReset("reset")),
    "connection reset by client",
  );
  assert.match(whyClientFailed(new LineTooLongError(10)), /line longer than 10 bytes/);
  const idle = { expired: true, timeoutMs: 2000 } as Parameters<typeof whyClientFailed>[1];
  assert.equal(
    whyClientFailed(new Deno.errors.Interrupted("closed"), idle),
    "idle for 2 s, disconnected",
  );
});

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
