/**
 * Hardening: every line server, as a real process, under attack. Each loop is
 * bounded in count, and each wait in time.
 */
import assert from "node:assert/strict";
import {
  decoder,
  encoder,
  exchange,
  LineClient,
  readAll,
  runTask,
  startServer,
  taskCommand,
  withTimeout,
} from "../helpers.ts";
import { writeAll } from "../../lib/io.ts";
import { Running } from "../../scripts/demo/processes.ts";

/** The servers that answer every line with `OK ... <line>`. */
const OK_SERVERS = ["socket_server", "socket_server_with_select", "socket_server_threads"] as const;
/** Every server with a line protocol, and the reply to a line. */
const LINE_SERVERS: [string, (line: Uint8Array) => Uint8Array][] = [
  ...OK_SERVERS.map((name) =>
    [name, (l: Uint8Array) => concat(encoder.encode("OK ... "), l, NL)] as [
      string,
      (line: Uint8Array) => Uint8Array,
    ]
  ),
  ["sensor_server", () => encoder.encode("pong\n")],
];
const MULTI = ["socket_server_with_select", "socket_server_threads", "sensor_server"];
const NL = new Uint8Array([0x0a]);

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function random(seed: number) {
  return () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

function start(name: string, ...extra: string[]) {
  const quiet = name === "socket_server" ? [] : ["--quiet"];
  const pool = name === "socket_server_threads" ? ["--workers", "2"] : [];
  return startServer(name, ["--port", "0", ...quiet, ...pool, ...extra]);
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

for (const [name, replyTo] of LINE_SERVERS) {
  Deno.test(`${name}: 3,000 random binary lines in random chunks come back byte for byte`, async () => {
    const server = await start(name);
    try {
      const rand = random(42);
      const lines: Uint8Array[] = [];
      for (let i = 0; i < 3000; i++) {
        // Any byte but \n; a \r only in the middle (a trailing \r is part of CRLF).
        const line = new Uint8Array(Math.floor(rand() * 200)).map(() => {
          const b = Math.floor(rand() * 256);
          return b === 0x0a || b === 0x0d ? 0x00 : b;
        });
        if (line.length > 2 && rand() < 0.1) line[1] = 0x0d;
        lines.push(line);
      }
      const input = concat(...lines.flatMap((l) => [l, NL]));
      const expected = concat(...lines.map(replyTo));
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      const reading = readAll(conn, 60_000);
      reading.catch(() => {}); // awaited below
      for (let at = 0; at < input.length;) {
        const n = 1 + Math.floor(rand() * 3000);
        await writeAll(conn, input.subarray(at, at + n));
        at += n;
      }
      await conn.closeWrite();
      const got = await reading;
      conn.close();
      assert.equal(got.length, expected.length);
      assert.equal(await sha256(got), await sha256(expected));
    } finally {
      await server.stop();
    }
  });

  Deno.test(`${name}: a flood without newline is cut off at --max-line; memory stays flat`, async () => {
    const server = await start(name, "--max-line", "65536");
    try {
      // 64 MB with no newline: the server must answer and hang up long before the end.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      const reading = readAll(conn);
      reading.catch(() => {}); // awaited below; don't let an early failure go unhandled
      const chunk = new Uint8Array(64 * 1024).fill(0x41);
      let sent = 0;
      try {
        for (let i = 0; i < 1024; i++) {
          await writeAll(conn, chunk);
          sent += chunk.length;
        }
      } catch {
        // The server closed on us: expected.
      }
      assert.equal(decoder.decode(await reading), "ERR line too long\n");
      conn.close();
      assert.ok(sent < 64 * 1024 * 1024, "the server stopped reading: it did not take all 64 MB");
      const steady = await LineClient.connect(server.port);
      assert.match(await steady.ask("after the flood") ?? "", /after the flood|pong/);
      steady.close();
    } finally {
      await server.stop();
    }
  });

  Deno.test(`${name}: replies carry NUL, high bytes, invalid UTF-8 and a mid-line CR exactly`, async () => {
    const server = await start(name);
    try {
      const line = new Uint8Array([0x00, 0xff, 0xc3, 0x28, 0x0d, 0x41, 0xe2, 0x82, 0x80, 0x7f]);
      const got = await exchange(server.port, concat(line, NL), 3);
      assert.deepEqual(got, replyTo(line));
    } finally {
      await server.stop();
    }
  });
}

for (const name of MULTI) {
  Deno.test(`${name}: 100 resets mid-line while another client keeps talking`, async () => {
    const server = await start(name);
    const steady = await LineClient.connect(server.port);
    try {
      let talking = true;
      let answered = 0;
      const talk = (async () => {
        while (talking && answered < 10_000) {
          const reply = await steady.ask(`steady ${answered}`);
          assert.match(reply ?? "", /^(OK \.\.\. steady \d+|pong)$/);
          answered++;
        }
      })();
      for (let i = 0; i < 100; i++) {
        const rude = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        await rude.write(encoder.encode("x\n".repeat(500) + "half a li"));
        await rude.read(new Uint8Array(1)); // unread replies remain: close() sends RST
        rude.close();
      }
      talking = false;
      await withTimeout(talk, 15_000, "steady client");
      assert.ok(answered > 0);
      assert.equal(await steady.ask("last"), name === "sensor_server" ? "pong" : "OK ... last");
    } finally {
      steady.close();
      await server.stop();
    }
  });

  Deno.test(`${name}: slowloris clients are dropped after --idle-timeout, others served`, async () => {
    const server = await start(name, "--idle-timeout", "0.5");
    try {
      const slow = await Promise.all(Array.from({ length: 50 }, async () => {
        const c = await LineClient.connect(server.port);
        await c.send("GET / HTTP/1.1\r\nHost: x\r\nX-a: "); // and never finish
        return c;
      }));
      const fine = await LineClient.connect(server.port);
      assert.match(await fine.ask("served") ?? "", /served|pong/);
      fine.close();
      for (const c of slow) {
        assert.equal(await c.line(), name === "sensor_server" ? "pong" : "OK ... GET / HTTP/1.1");
        assert.equal(await c.line(), name === "sensor_server" ? "pong" : "OK ... Host: x");
        assert.equal(await c.line(), null); // dropped
        c.close();
      }
    } finally {
      await server.stop();
    }
  });

  Deno.test(`${name}: connection cap: ERR server busy past --max-conns`, async () => {
    const server = await start(
      name,
      "--max-conns",
      "5",
      ...(name === "socket_server_threads" ? ["--workers", "1"] : []),
    );
    const held = await Promise.all(
      Array.from({ length: 5 }, () => LineClient.connect(server.port)),
    );
    try {
      for (const c of held) assert.ok(await c.ask("hold"));
      const extra = await Promise.all(
        Array.from({ length: 5 }, () => LineClient.connect(server.port)),
      );
      for (const c of extra) {
        assert.equal(await c.line(), "ERR server busy");
        c.close();
      }
    } finally {
      for (const c of held) c.close();
      await server.stop();
    }
  });

  Deno.test(`${name}: 2,000 idle clients held, then one line from each`, async () => {
    const server = await start(name, "--max-conns", "3000");
    const clients: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < 2000; i++) {
        clients.push(await Deno.connect({ hostname: "127.0.0.1", port: server.port }));
      }
      const replies = await Promise.all(clients.map(async (c, i) => {
        await writeAll(c, encoder.encode(`idle client ${i}\n`));
        const buf = new Uint8Array(64);
        let text = "";
        while (!text.endsWith("\n")) {
          const n = await withTimeout(c.read(buf), 30_000, `client ${i}`);
          if (n === null) break;
          text += decoder.decode(buf.subarray(0, n));
        }
        return text;
      }));
      replies.forEach((r, i) =>
        assert.equal(r, name === "sensor_server" ? "pong\n" : `OK ... idle client ${i}\n`)
      );
    } finally {
      for (const c of clients) c.close();
      await server.stop();
    }
  });
}

for (const name of OK_SERVERS) {
  Deno.test(`${name}: 200,000 pipelined lines, every reply in order (checksum)`, async () => {
    const server = await start(name);
    try {
      const lines = Array.from({ length: 200_000 }, (_, i) => `pipelined line number ${i}`);
      const input = encoder.encode(lines.join("\n") + "\n");
      const expected = encoder.encode(lines.map((l) => `OK ... ${l}\n`).join(""));
      const got = await withTimeout(exchange(server.port, input), 60_000, "200k lines");
      assert.equal(got.length, expected.length);
      assert.equal(await sha256(got), await sha256(expected));
    } finally {
      await server.stop();
    }
  });

  Deno.test(`${name}: SIGTERM during a pipelined stream: exit 0 within 2 s, replies a clean prefix`, async () => {
    const server = await start(name);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      const lines = Array.from({ length: 100_000 }, (_, i) => `stream ${i}`);
      const expected = lines.map((l) => `OK ... ${l}\n`).join("");
      const chunks: Uint8Array[] = [];
      let flowing!: () => void;
      const repliesFlowing = new Promise<void>((resolve) => flowing = resolve);
      const reading = (async () => {
        const buf = new Uint8Array(64 * 1024);
        for (let i = 0; i < 1_000_000; i++) {
          // A reset at the end is expected: the server closes with our lines unread.
          const n = await conn.read(buf).catch(() => null);
          if (n === null) return;
          chunks.push(buf.slice(0, n));
          flowing();
        }
      })();
      const writing = writeAll(conn, encoder.encode(lines.join("\n") + "\n")).catch(() => {});
      await withTimeout(repliesFlowing, 15_000, "first replies");
      const t0 = performance.now();
      server.kill("SIGTERM");
      const done = await server.finished();
      const ms = performance.now() - t0;
      await writing;
      await withTimeout(reading, 15_000, "reading to the end");
      const got = decoder.decode(concat(...chunks));
      assert.equal(done.code, 0, done.stderr);
      assert.ok(ms < 2000, `took ${ms} ms`);
      assert.ok(expected.startsWith(got), "the replies received are a prefix of the right ones");
      assert.ok(got.length > 0);
    } finally {
      conn.close();
    }
  });
}

Deno.test("servers listen on IPv6 loopback and print [::1]:PORT", async () => {
  for (const name of ["socket_server", "socket_server_with_select", "sensor_server"]) {
    const r = new Running([
      ...taskCommand(name).map((a) => a === "--allow-net=127.0.0.1" ? "--allow-net=[::1]" : a),
      "--host",
      "::1",
      "--port",
      "0",
    ]);
    try {
      const [, port] = await r.stdout.waitFor(/listening on \[::1\]:(\d+)/);
      const c = await LineClient.connect(Number(port), "::1");
      assert.match(await c.ask("six") ?? "", /OK \.\.\. six|pong/);
      c.close();
    } finally {
      r.kill("SIGTERM");
      assert.equal((await r.finished()).code, 0);
    }
  }
});

Deno.test("least privilege: no task grants every permission; servers need only the loopback addresses", () => {
  const tasks =
    JSON.parse(Deno.readTextFileSync(new URL("../../deno.json", import.meta.url))).tasks;
  for (const [name, task] of Object.entries(tasks) as [string, { command: string }][]) {
    assert.doesNotMatch(task.command, /(^|\s)(-A|--allow-all)(\s|$)/, name);
    if (/_server/.test(name)) {
      assert.match(task.command, /--allow-net=127\.0\.0\.1,\[::1\](\s|$)/, name);
    }
  }
});

Deno.test("a missing permission is one error line naming the flag to add", async () => {
  for (
    const name of [
      "socket_server",
      "sensor_server",
      "basic_server",
      "socket_client",
      "basic_client",
    ]
  ) {
    const argv = taskCommand(name).filter((a) => !a.startsWith("--allow-net"));
    const r = await new Running([...argv, "--port", name.endsWith("client") ? "9" : "0"])
      .finished();
    assert.equal(r.code, 1, `${name}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split("\n").length, 1, `${name}: ${r.stderr}`);
    assert.match(r.stderr, /^error: .*--allow-net=127\.0\.0\.1/, name);
  }
});

Deno.test("clients against an endless line: a clear error and exit 1", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = String(listener.addr.port);
  const flooding = (async () => {
    for (let i = 0; i < 2; i++) {
      const conn = await listener.accept();
      const chunk = new Uint8Array(64 * 1024).fill(0x5a);
      try {
        for (let j = 0; j < 64; j++) await writeAll(conn, chunk); // 4 MB, no newline
      } catch {
        // The client hung up: expected.
      }
      conn.close();
    }
  })();
  for (const [task, args] of [["socket_client", ["-m", "hi"]], ["hello_client", []]] as const) {
    const r = await runTask(task, ["--port", port, ...args]);
    assert.equal(r.code, 1, `${task}: ${r.stderr}`);
    assert.match(r.stderr, /^error: (a reply from \S+ is |line )longer than \d+ bytes/m, task);
  }
  await flooding;
  listener.close();
});
