/**
 * End-to-end: a server's life at its edges, for every server but the worker
 * pool (tests/threads_test.ts): stopped the instant it is ready, held by a
 * client that trickles or never reads, kept busy, flooded, fed thousands of
 * one-message clients, given limits past what the runtime can honour, and
 * sent bytes that would drive a terminal.
 */
import assert from "node:assert/strict";
import {
  decoder,
  encoder,
  hasCommand,
  LineClient,
  readAll,
  Running,
  runTask,
  scriptCommand,
  type Server,
  sh,
  startServer,
  WAYS,
  withTimeout,
} from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

/** Every server but the pool, with the flags that make it start on a free port. */
const SERVERS: Record<string, string[]> = {
  socket_server: ["--port", "0"],
  socket_server_with_select: ["--port", "0"],
  sensor_server: ["--port", "0"],
  basic_server: ["--port", "0"],
  hello_server: ["--port", "0", "--forever"],
  tcp_server: ["--port", "0"],
  chat_server: ["--port", "0"],
};

Deno.test("every script runs as 'deno run -A scripts/NAME.ts', from the project and from elsewhere", async () => {
  const scripts = [...Deno.readDirSync(new URL("../scripts", import.meta.url))]
    .map((e) => e.name.replace(/\.ts$/, ""));
  await Promise.all(scripts.map(async (name) => {
    for (const way of ["run -A", "run -A elsewhere"] as const) {
      const { argv, cwd } = scriptCommand(name, way);
      const r = await new Running([...argv, "--help"], "null", cwd).finished();
      assert.equal(r.code, 0, `${name} (${way}): ${r.stderr}`);
      assert.match(r.stdout, /Usage: /, `${name} (${way})`);
      assert.equal(r.stderr, "", `${name} (${way})`);
    }
  }));
});

Deno.test("a signal the instant 'listening on' appears: exit 0 within 2 s, every time, every way it is run", async () => {
  const TRIES = 3; // per signal; each try uses the next way of running the script
  await Promise.all(
    Object.entries(SERVERS).map(async ([name, args]) => {
      for (const signal of ["SIGTERM", "SIGINT"] as const) {
        for (let i = 0; i < TRIES; i++) {
          const way = WAYS[i % WAYS.length];
          const server = await startServer(name, args, way);
          server.kill(signal); // no wait at all: the line means "ready, Ctrl+C included"
          const t0 = performance.now();
          const done = await server.finished(5000);
          const label = `${name} (${way}), ${signal} #${i + 1}`;
          assert.equal(done.signal, null, `${label}: killed by the signal: ${done.stderr}`);
          assert.equal(done.code, 0, `${label}: ${done.stderr}`);
          assert.ok(performance.now() - t0 < 2000, `${label}: took ${performance.now() - t0} ms`);
          assert.match(done.stdout, /shut down/, label);
        }
      }
    }),
  );
});

/** Waits until `server` logs that a client was dropped as idle; returns the ms it took from `t0`. */
async function idleDrop(server: Server, t0: number, seconds: number): Promise<number> {
  await server.stdout.waitFor(new RegExp(`idle for ${seconds} s, disconnected`), 15_000);
  return performance.now() - t0;
}

/** A python3 client with a tiny receive buffer that sends lines and never reads. */
function nonReader(port: number): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  return sh(
    `python3 -c '
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", ${port}))
s.settimeout(20)
chunk = (b"x" * 99 + b"\\n") * 1000
sent = 0
try:
    while sent < 64 * 1024 * 1024:
        s.sendall(chunk)
        sent += len(chunk)
    print("never blocked")
except OSError as e:
    print("server closed us after", sent, "bytes:", type(e).__name__)
'`,
    30_000,
  );
}

for (const name of ["socket_server", "socket_server_with_select", "sensor_server"]) {
  Deno.test({
    name: `${name}: a client that never reads its replies is closed within 2x --idle-timeout`,
    ignore: !hasCommand("python3"),
    async fn() {
      const quiet = name === "socket_server" ? [] : ["--quiet"];
      const server = await startServer(name, ["--port", "0", "--idle-timeout", "1", ...quiet]);
      try {
        const t0 = performance.now();
        const peer = nonReader(server.port);
        const ms = await idleDrop(server, t0, 1);
        const result = await peer;
        assert.match(decoder.decode(result.stdout), /server closed us/, result.stderr);
        assert.ok(ms < 2 * 1000 + 1000, `dropped after ${ms.toFixed(0)} ms`);
        // The next client is served (socket_server serves one at a time).
        const next = await LineClient.connect(server.port);
        assert.match(await next.ask("next") ?? "", /OK \.\.\. next|pong/);
        next.close();
      } finally {
        const done = await server.stop();
        assert.equal(done.code, 0, done.stderr);
      }
    },
  });
}

for (const [name, flag] of [["socket_server", "--idle-timeout"], ["basic_server", "--timeout"]]) {
  Deno.test(`${name}: a client trickling one byte at a time, never a newline, is closed within 2x ${flag}`, async () => {
    const server = await startServer(name, ["--port", "0", flag, "1"]);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      const t0 = performance.now();
      let closed = false;
      const trickle = (async () => {
        // One byte every 200 ms, for at most 10 s: each byte would restart a per-read clock.
        for (let i = 0; i < 50 && !closed; i++) {
          await conn.write(encoder.encode("x")).catch(() => closed = true);
          await new Promise((r) => setTimeout(r, 200));
        }
      })();
      const ms = await idleDrop(server, t0, 1);
      closed = true;
      await trickle;
      assert.ok(ms < 2 * 1000 + 1000, `dropped after ${ms.toFixed(0)} ms`);
    } finally {
      conn.close();
      const done = await server.stop();
      assert.equal(done.code, 0, done.stderr);
    }
  });
}

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

/** bench/loadgen.c compiled once, for the flood test. */
let loadgen: string | undefined;
async function compileLoadgen(): Promise<string> {
  if (loadgen) return loadgen;
  const out = `${Deno.makeTempDirSync()}/loadgen`;
  const cc = await new Deno.Command("cc", {
    args: ["-O2", "-o", out, new URL("../bench/loadgen.c", import.meta.url).pathname],
  }).output();
  assert.ok(cc.success, decoder.decode(cc.stderr));
  return loadgen = out;
}

for (const name of ["socket_server_with_select", "sensor_server"]) {
  Deno.test({
    name: `${name}: one probe's round trips stay fast while 20 clients flood it`,
    ignore: !hasCommand("cc"),
    async fn() {
      const server = await startServer(name, ["--port", "0", "--quiet"]);
      try {
        // The flood runs natively in its own process, so that neither it nor
        // the probe waits on this test's event loop. Every flooder keeps its
        // socket full: a server that serves a connection as long as its reads
        // complete at once would keep the probe waiting for seconds.
        const gen = await compileLoadgen();
        const out = await new Deno.Command(gen, {
          args: ["flood", "127.0.0.1", String(server.port), "20", "2", "64"],
        }).output();
        const result = decoder.decode(out.stdout);
        assert.ok(out.success, result + decoder.decode(out.stderr));
        const worst = Number(result.match(/probe_max_ms=([\d.]+)/)![1]);
        const probes = Number(result.match(/probes=(\d+)/)![1]);
        console.log(`${name}, 20 flooders: ${result.trim()}`);
        assert.ok(worst < 300, `worst probe round trip ${worst} ms`);
        assert.ok(probes > 20, `only ${probes} probes answered in 2 s`);
      } finally {
        const done = await server.stop();
        assert.equal(done.code, 0, done.stderr);
      }
    },
  });
}

/** Resident memory of a process, in MB (read by `ps`: Deno grants /proc only with -A). */
function rssMb(pid: number): number {
  const out = new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)] }).outputSync();
  return Number(decoder.decode(out.stdout).trim()) / 1024;
}

for (const name of ["basic_server", "hello_server"]) {
  Deno.test({
    name: `${name}: memory stays flat after 3,000 clients with 60 KB messages`,
    ignore: !hasCommand("ps"),
    async fn() {
      const server = await startServer(name, [...SERVERS[name], "--timeout", "5"]);
      try {
        const message = encoder.encode("m".repeat(60_000) + "\n");
        const oneClient = async () => {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
          try {
            // hello_server greets first; basic_server just waits: either way, send then read.
            await writeAll(conn, message);
            await readAll(conn);
          } finally {
            conn.close();
          }
        };
        for (let i = 0; i < 200; i++) await oneClient(); // warm up
        const before = rssMb(server.child.pid);
        const t0 = performance.now();
        for (let i = 0; i < 3000 && performance.now() - t0 < 60_000; i++) await oneClient();
        const after = rssMb(server.child.pid);
        console.log(`${name}: RSS ${before.toFixed(1)} MB -> ${after.toFixed(1)} MB`);
        // Kept readers would hold 3,000 x 64 KiB = 190 MB.
        assert.ok(after - before < 60, `RSS grew from ${before} to ${after} MB`);
      } finally {
        const done = await server.stop();
        assert.equal(done.code, 0, done.stderr);
      }
    },
  });
}

Deno.test("limits past what the runtime can honour are usage errors, shown in --help", async () => {
  for (
    const [task, args] of [
      ["tcp_server", ["--port", "0", "--timeout", "3000000"]],
      ["socket_server", ["--max-line", "99999999999999999999"]],
      ["socket_server", ["--max-line", String(16 * 1024 * 1024 + 1)]],
      ["socket_server_with_select", ["--max-conns", "100001"]],
      ["basic_server", ["--timeout", "86401"]],
    ] as const
  ) {
    const r = await runTask(task, [...args]);
    assert.equal(r.code, 2, `${task} ${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /^error: invalid --\S+ '\d+': expected a .* from \d+ to \d+/, r.stderr);
  }
  const help = await runTask("socket_server", ["--help"]);
  assert.match(help.stdout, /--max-line N .*\(default 65536, max 16777216\)/);
});

/** Bytes that would retitle the window, clear the screen and fake a log line if printed raw. */
const HOSTILE = encoder.encode("\x1b]0;pwned\x07\x1b[2J\rlistening on 6.6.6.6:1\n");
const SHOWN = String.raw`\x1b]0;pwned\x07\x1b[2J\rlistening on 6.6.6.6:1`;

for (const name of ["sensor_server", "basic_server", "hello_server"]) {
  Deno.test(`${name}: a peer's escape bytes reach the log escaped, the wire exact`, async () => {
    const server = await startServer(name, SERVERS[name]);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      try {
        await writeAll(conn, HOSTILE);
        await conn.closeWrite();
        const reply = await readAll(conn);
        if (name === "basic_server") {
          // The answer carries the bytes exactly as sent.
          assert.deepEqual(reply.slice(-HOSTILE.length), HOSTILE);
        }
      } finally {
        conn.close();
      }
      await server.stdout.waitFor(SHOWN);
      const done = await server.stop();
      assert.equal(done.code, 0, done.stderr);
      const raw = ["\x1b", "\x07", "\r"].filter((c) => done.stdout.includes(c));
      assert.deepEqual(raw, [], `raw control bytes in:\n${done.stdout}`);
      assert.equal(done.stdout.match(/listening on/g)?.length, 2, "one real, one escaped");
    } finally {
      server.kill("SIGKILL");
    }
  });
}

Deno.test({
  name: "chat_server: one client flooding the room does not keep a newcomer waiting",
  ignore: !hasCommand("nc") || !hasCommand("timeout"),
  async fn() {
    const server = await startServer("chat_server", ["--port", "0", "--quiet"]);
    const dir = await Deno.makeTempDir();
    try {
      // nc streams a file as fast as the server reads it, from its own process.
      await Deno.writeFile(`${dir}/flood`, encoder.encode(("f".repeat(99) + "\n").repeat(500_000)));
      const flooder = sh(
        `(printf 'flooder\\n'; cat ${dir}/flood ${dir}/flood ${dir}/flood) | ` +
          `timeout 4 nc -N 127.0.0.1 ${server.port} > /dev/null`,
        20_000,
      );
      await new Promise((r) => setTimeout(r, 300)); // the flood is under way
      let worst = 0;
      for (let i = 0; i < 8; i++) {
        const t0 = performance.now();
        const c = await LineClient.connect(server.port);
        assert.equal(await c.line(), "* name?");
        worst = Math.max(worst, performance.now() - t0);
        c.close();
        await new Promise((r) => setTimeout(r, 100));
      }
      await flooder;
      console.log(`worst wait for '* name?' during the flood: ${worst.toFixed(1)} ms`);
      assert.ok(worst < 1000, `a newcomer waited ${worst.toFixed(0)} ms`);
    } finally {
      await Deno.remove(dir, { recursive: true });
      const done = await server.stop();
      assert.equal(done.code, 0, done.stderr);
    }
  },
});

for (const name of ["basic_server", "hello_server"]) {
  Deno.test(`${name}: a message over --max-line is answered 'ERR line too long', like the line servers`, async () => {
    const server = await startServer(name, SERVERS[name]);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      try {
        const writing = writeAll(conn, new Uint8Array(70_000).fill(0x78)).catch(() => {});
        const reply = decoder.decode(await readAll(conn));
        await writing;
        assert.match(reply, /ERR line too long\n$/);
      } finally {
        conn.close();
      }
    } finally {
      const done = await server.stop();
      assert.equal(done.code, 0, done.stderr);
    }
  });
}
