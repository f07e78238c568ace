/**
 * The rules the servers share. Each test loops over every server it holds
 * for; a test about one server is in that server's file. Every script runs
 * however a reader starts it; a signal the instant a server is ready stops
 * it cleanly; the servers that take many clients at once keep each client's
 * replies its own under load, misbehaviour and caps; a client that never
 * reads or trickles bytes is dropped on time (floods and memory after a
 * burst: load_test.ts); memory stays flat over thousands of clients; limits past what the
 * runtime can honour are usage errors; a peer's escape bytes reach the log
 * escaped; an over-long message gets 'ERR line too long'; clients that reset
 * before accept() and a process out of file descriptors delay nobody.
 */
import assert from "node:assert/strict";
import {
  askOnce,
  decoder,
  encoder,
  floodAndRead,
  hasCommand,
  LineClient,
  Output,
  readAll,
  ROOT,
  Running,
  runTask,
  scriptCommand,
  type Server,
  sh,
  startServer,
  taskCommand,
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
  http_server: ["--port", "0"],
};

Deno.test("every script runs as 'deno run -A scripts/NAME.ts', from the project and from elsewhere", async () => {
  const scripts = [...Deno.readDirSync(new URL("../scripts", import.meta.url))]
    .filter((e) => e.isFile) // not scripts/workers/: loaded by a script, not run on its own
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

/** The servers that serve many clients at once. */
const MANY_AT_ONCE = ["socket_server_with_select", "socket_server_threads"] as const;

/** A deterministic pseudo-random generator, so a failure can be replayed. */
function random(seed: number) {
  return () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

for (const name of MANY_AT_ONCE) {
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
      ["http_server", ["--max-header-bytes", String(16 * 1024 * 1024 + 1)]],
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

// -------------------------------------------- the three line servers at their limits

const POOLS: Record<string, string[]> = {
  socket_server: [],
  socket_server_with_select: ["--quiet"],
  socket_server_threads: ["--quiet", "--workers", "2"],
};

/** 200 clients that connect and reset at once (SO_LINGER 0), before the server accepts them. */
const RESETS = `
import socket, struct, sys
for _ in range(200):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
`;

for (const [name, flags] of Object.entries(POOLS)) {
  Deno.test({
    name: `${name}: 200 clients resetting before accept() do not delay the next one`,
    ignore: !hasCommand("python3"),
    async fn() {
      const server = await startServer(name, ["--port", "0", ...flags]);
      // socket_server takes one client at a time: with one held, all 200 wait in the backlog.
      const busy = await LineClient.connect(server.port);
      try {
        assert.equal(await busy.ask("busy"), "OK ... busy");
        const py = await new Deno.Command("python3", {
          args: ["-c", RESETS, String(server.port)],
          stdout: "null",
          stderr: "piped",
        }).output();
        assert.equal(py.code, 0, new TextDecoder().decode(py.stderr));
        busy.close();
        const t0 = performance.now();
        assert.equal(await askOnce(server.port, "honest"), "OK ... honest");
        const ms = performance.now() - t0;
        console.log(`  ${name}: answered ${ms.toFixed(0)} ms after 200 resets`);
        assert.ok(ms < 1500, `answered after ${ms.toFixed(0)} ms`);
      } finally {
        busy.close();
        const done = await server.stop();
        assert.equal(done.code, 0, done.stderr);
        assert.doesNotMatch(done.stdout, /accept failed/);
      }
    },
  });
}

/** A server started through `sh -c 'ulimit -n N; exec deno ...'`: a process short of descriptors. */
async function startWithFdLimit(name: string, args: string[], maxFds: number) {
  const child = new Deno.Command("sh", {
    args: [
      "-c",
      `ulimit -n ${maxFds} && exec "$0" "$@"`,
      Deno.execPath(),
      ...taskCommand(name),
      ...args,
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Output(child.stdout);
  const stderr = new Output(child.stderr);
  const finished = async () => {
    const status = await child.status;
    await Promise.all([stdout.done, stderr.done]);
    return status;
  };
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    const status = await finished();
    clearTimeout(timer);
    return status;
  };
  try {
    const [, port] = await stdout.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
    return { port: Number(port), stdout, stderr, stop };
  } catch (err) {
    child.kill("SIGKILL");
    await finished();
    throw new Error(`${(err as Error).message}\nstderr: ${stderr.text}`);
  }
}

const FD_LIMIT = 48;
const CLIENTS = 60;

for (const [name, flags] of Object.entries(POOLS)) {
  const oneAtATime = name === "socket_server";
  const workers = name === "socket_server_threads" ? 2 : 1;
  Deno.test(`${name}: out of file descriptors (ulimit -n ${FD_LIMIT}, ${CLIENTS} clients held), at most one 'accept failed' a second; served again once clients leave`, async () => {
    const server = await startWithFdLimit(name, ["--port", "0", ...flags], FD_LIMIT);
    const clients: LineClient[] = [];
    const answered: LineClient[] = []; // in the order their replies came
    const wrong: string[] = [];
    let wake = () => {};
    let failedAt = 0;
    try {
      const failed = server.stdout.waitFor(/accept failed/, 30_000);
      failed.then(() => failedAt = performance.now(), () => {});
      for (let i = 0; i < CLIENTS; i++) {
        const c = await LineClient.connect(server.port);
        clients.push(c);
        await c.send(`hi ${i}\n`);
        const reply = c.line().then((line) => {
          if (line !== `OK ... hi ${i}`) wrong.push(`client ${i}: ${line}`);
          answered.push(c);
          wake();
        });
        reply.catch(() => {}); // a timeout shows as a client never answered
        // Until the process runs out, each client is accepted and answered (socket_server: the first).
        if (failedAt === 0 && (i === 0 || !oneAtATime)) await Promise.race([reply, failed]);
      }
      const accepted = answered.length;
      if (oneAtATime) {
        // It holds one client at a time: the others wait in the backlog and cost it no descriptor.
        assert.equal(accepted, 1);
      } else {
        // Out of descriptors: let it fail for two seconds at least (three reports).
        await failed;
        assert.ok(accepted < CLIENTS, `${accepted} accepted`);
        await server.stdout.waitForCount(/accept failed/, 3 * workers, 15_000);
      }
      // Answered clients leave one at a time, each freeing one descriptor for one waiting
      // client: the server is at its limit, accepting one and failing the next, again and again.
      for (let left = 0; answered.length < CLIENTS; left++) {
        answered[left].close();
        const next = new Promise<void>((resolve) => wake = resolve);
        await withTimeout(next, 5000, `a waiting client served after ${left + 1} left`);
      }
      assert.deepEqual(wrong, []);
      for (const c of clients) c.close();
      assert.equal(await askOnce(server.port, "after"), "OK ... after");
      console.log(`  ${name}: ${accepted} clients accepted before it ran out`);
    } finally {
      for (const c of clients) c.close();
      const status = await server.stop();
      assert.equal(status.code, 0, server.stderr.text);
    }
    const lines = server.stdout.text.match(/.*accept failed.*/g) ?? [];
    if (oneAtATime) {
      assert.equal(lines.length, 0);
      return;
    }
    assert.match(server.stdout.text, /accepting again/);
    const seconds = (performance.now() - failedAt) / 1000;
    const log = server.stdout.text.match(/.*accept(ing again| failed).*/g)!.join("\n");
    for (let w = 1; w <= workers; w++) {
      const own = workers === 1 ? lines : lines.filter((l) => l.startsWith(`[worker ${w}]`));
      assert.ok(own.length <= Math.ceil(seconds) + 1, `${own.length} in ${seconds} s:\n${log}`);
    }
    console.log(`  ${name}: ${lines.length} 'accept failed' line(s) in ${seconds.toFixed(1)} s`);
  });
}

Deno.test("socket_server_with_select: its fairness step, first needed while out of descriptors, works again once they are back", async () => {
  const server = await startWithFdLimit("socket_server_with_select", ["--port", "0"], FD_LIMIT);
  const held: LineClient[] = [];
  try {
    // More clients than descriptors, before any line: the first nextPoll comes while none is left.
    const failed = server.stdout.waitFor(/accept failed/, 30_000);
    for (let i = 0; i < CLIENTS; i++) held.push(await LineClient.connect(server.port));
    await failed;
    await held[0].send("first\n");
    assert.equal(await held[0].line(), "OK ... first");
    await server.stderr.waitFor(/nextPoll cannot open its loopback connection/, 10_000);
    for (const c of held) c.close();
    // Descriptors are back: within a few seconds of lines, nextPoll opens its pair again.
    const back = server.stderr.waitFor(/nextPoll works again/, 15_000);
    let ok = false;
    back.then(() => ok = true, () => {});
    for (let i = 0; i < 60 && !ok; i++) {
      assert.equal(await askOnce(server.port, `again ${i}`), `OK ... again ${i}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await back;
    assert.doesNotMatch(server.stderr.text, /no permission/);
  } finally {
    for (const c of held) c.close();
    const status = await server.stop();
    assert.equal(status.code, 0, server.stderr.text);
  }
});
