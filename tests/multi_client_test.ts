/**
 * End-to-end: the two multi-client servers (one thread with the event loop,
 * and a pool of worker threads) under many concurrent, misbehaving clients.
 */
import assert from "node:assert/strict";
import {
  decoder,
  encoder,
  floodAndRead,
  LineClient,
  readAll,
  runTask,
  sh,
  startServer,
} from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

const SERVERS = ["socket_server_with_select", "socket_server_threads"] as const;

/** A deterministic pseudo-random generator, so a failure can be replayed. */
function random(seed: number) {
  return () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

for (const name of SERVERS) {
  const start = (...extra: string[]) =>
    startServer(name, [
      "--port",
      "0",
      "--quiet",
      ...(name.endsWith("threads") ? ["--workers", "2"] : []),
      ...extra,
    ]);

  Deno.test(`${name}: 200 concurrent clients interleaving lines each get exactly their replies`, async () => {
    const server = await start();
    try {
      await Promise.all(Array.from({ length: 200 }, async (_, i) => {
        const rand = random(i + 1);
        const lines = Array.from(
          { length: 20 },
          (_, j) => `client ${i} line ${j} ${"z".repeat(j * 7)}`,
        );
        const bytes = encoder.encode(lines.join("\n") + "\n");
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        try {
          const reading = readAll(conn);
          reading.catch(() => {}); // awaited below
          for (let at = 0; at < bytes.length;) {
            const n = 1 + Math.floor(rand() * 40);
            await writeAll(conn, bytes.subarray(at, at + n));
            at += n;
            if (rand() < 0.3) await new Promise((r) => setTimeout(r, 0)); // let others interleave
          }
          await conn.closeWrite();
          const reply = decoder.decode(await reading);
          assert.equal(reply, lines.map((l) => `OK ... ${l}\n`).join(""), `client ${i}`);
        } finally {
          conn.close();
        }
      }));
    } finally {
      const done = await server.stop();
      assert.equal(done.code, 0, done.stderr);
    }
  });

  Deno.test(`${name}: clients resetting mid-line harm nobody`, async () => {
    const server = await start();
    try {
      const steady = await LineClient.connect(server.port);
      assert.equal(await steady.ask("before"), "OK ... before");
      await Promise.all(Array.from({ length: 50 }, async (_, i) => {
        const rude = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        await rude.write(encoder.encode("x\n".repeat(2000) + `half line ${i}`));
        await rude.read(new Uint8Array(1)); // more replies stay unread, so close() sends RST
        rude.close();
      }));
      for (let i = 0; i < 20; i++) {
        assert.equal(await steady.ask(`steady ${i}`), `OK ... steady ${i}`);
      }
      steady.close();
    } finally {
      await server.stop();
    }
  });

  Deno.test(`${name}: a second client is served while the first stays silent`, async () => {
    const server = await start();
    const silent = await LineClient.connect(server.port);
    try {
      await silent.send("half a line, then silence");
      const other = await LineClient.connect(server.port);
      assert.equal(await other.ask("not blocked"), "OK ... not blocked");
      other.close();
      await silent.send(" ...done\n");
      assert.equal(await silent.line(), "OK ... half a line, then silence ...done");
    } finally {
      silent.close();
      await server.stop();
    }
  });

  Deno.test(`${name}: --max-conns turns away extra clients with ERR server busy`, async () => {
    // For the pool (two workers here) it caps the whole pool; see also tests/threads_test.ts.
    const server = await start("--max-conns", "2");
    const a = await LineClient.connect(server.port);
    const b = await LineClient.connect(server.port);
    try {
      assert.equal(await a.ask("a"), "OK ... a");
      assert.equal(await b.ask("b"), "OK ... b");
      const c = await LineClient.connect(server.port);
      assert.equal(await c.line(), "ERR server busy");
      assert.equal(await c.line(), null);
      c.close();
      a.close();
      // A slot frees when a client leaves (the server notices the close first).
      let served = false;
      for (let i = 0; i < 50 && !served; i++) {
        const d = await LineClient.connect(server.port);
        served = (await d.ask("d")) === "OK ... d";
        d.close();
      }
      assert.ok(served, "a new client is served once a slot is free");
    } finally {
      a.close();
      b.close();
      await server.stop();
    }
  });

  Deno.test(`${name}: --idle-timeout drops a silent client`, async () => {
    const server = await start("--idle-timeout", "0.3");
    try {
      const silent = await LineClient.connect(server.port);
      assert.equal(await silent.line(), null);
      silent.close();
      await server.stdout.waitFor(/idle for 0\.3 s, disconnected/);
    } finally {
      await server.stop();
    }
  });

  Deno.test(`${name}: an endless line gets ERR line too long, others carry on`, async () => {
    const server = await start("--max-line", "4096");
    try {
      const steady = await LineClient.connect(server.port);
      const flood = await floodAndRead(server.port, new Uint8Array(100_000).fill(0x61));
      assert.equal(decoder.decode(flood), "ERR line too long\n");
      assert.equal(await steady.ask("fine"), "OK ... fine");
      steady.close();
    } finally {
      await server.stop();
    }
  });

  Deno.test(`${name}: SIGTERM with clients connected exits 0 within 2 s`, async () => {
    const server = await start();
    const clients = await Promise.all(
      Array.from({ length: 10 }, () => LineClient.connect(server.port)),
    );
    try {
      for (const c of clients) assert.equal(await c.ask("hi"), "OK ... hi");
      const t0 = performance.now();
      const done = await server.stop();
      const ms = performance.now() - t0;
      assert.equal(done.code, 0, done.stderr);
      assert.ok(ms < 2000, `took ${ms} ms`);
      assert.match(done.stdout, /shut down/);
      for (const c of clients) assert.equal(await c.line(), null);
    } finally {
      for (const c of clients) c.close();
    }
  });
}

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

/** The number of OS threads of a process, from /proc (Linux). */
async function threadsOf(pid: number): Promise<number> {
  const out = await sh(`ps -o nlwp= -p ${pid}`);
  return Number(decoder.decode(out.stdout).trim());
}

Deno.test({
  name: "socket_server_threads: more workers, more threads; clients spread over workers",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const one = await startServer("socket_server_threads", ["--port", "0", "--workers", "1"]);
    const four = await startServer("socket_server_threads", ["--port", "0", "--workers", "4"]);
    try {
      await four.stdout.waitFor("4 worker thread(s) sharing the port");
      const diff = await threadsOf(four.child.pid) - await threadsOf(one.child.pid);
      assert.ok(diff >= 3, `4 workers should add at least 3 threads, added ${diff}`);
      for (let i = 0; i < 40; i++) {
        const c = await LineClient.connect(four.port);
        assert.equal(await c.ask(`c${i}`), `OK ... c${i}`);
        c.close();
      }
      await four.stdout.waitForCount(/is offline/, 40);
      const used = new Set(four.stdout.text.match(/\[worker \d\]/g));
      assert.ok(used.size >= 2, `clients all went to ${[...used]}`);
    } finally {
      await one.stop();
      await four.stop();
    }
  },
});

Deno.test("socket_server_threads: port in use is one error line and exit 1", async () => {
  const first = await startServer("socket_server_with_select");
  try {
    const r = await runTask("socket_server_threads", [
      "--port",
      String(first.port),
      "--workers",
      "2",
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^error: port ${first.port} is already in use`));
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  } finally {
    await first.stop();
  }
});
