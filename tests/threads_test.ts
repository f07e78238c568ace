/**
 * End-to-end: the worker pool (scripts/socket_server_threads.ts) at its
 * edges: every way it is run (and the one-worker fallback without unstable
 * net), more workers making more threads, port in use, signals the instant
 * it is ready and doubled, a cap shared by the whole pool, and a worker's
 * crash. What it shares with the other servers (many clients at once,
 * resets before accept(), running out of file descriptors) is in
 * tests/servers_test.ts.
 */
import assert from "node:assert/strict";
import {
  askOnce,
  decoder,
  LineClient,
  Running,
  runTask,
  type Server,
  sh,
  startServer,
  WAYS,
  withTimeout,
} from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

const NAME = "socket_server_threads";

const start = (args: string[], way?: (typeof WAYS)[number]) =>
  startServer(NAME, ["--port", "0", ...args], way);

/** Connects, retrying only while the port is refused (no worker listening), for up to 5 s. */
async function connectWhileRefused(port: number): Promise<{ client: LineClient; refused: number }> {
  const deadline = performance.now() + 5000;
  for (let refused = 0;; refused++) {
    try {
      return { client: await LineClient.connect(port), refused };
    } catch (err) {
      if (!(err instanceof Deno.errors.ConnectionRefused) || performance.now() > deadline) {
        throw err;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

Deno.test(`${NAME}: --help shows the --workers maximum once, and past it is a usage error`, async () => {
  const help = await runTask(NAME, ["--help"]);
  assert.equal(help.code, 0);
  const line = help.stdout.split("\n").find((l) => l.includes("--workers"))!;
  assert.match(line, /\(default \d+, max 32\)$/);
  assert.equal(line.match(/default/g)?.length, 1, line);
  for (const bad of ["33", "0", "many"]) {
    const r = await runTask(NAME, ["--workers", bad]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /^error: invalid --workers .* from 1 to 32 \(see socket_server_threads --help\)\n$/,
    );
  }
});

for (const way of WAYS) {
  Deno.test(`${NAME}: run as '${way}', the pool shares the port (no fallback)`, async () => {
    const server = await start(["--workers", "2", "--quiet"], way);
    try {
      assert.match(server.stdout.text, /^2 worker threads sharing the port\n/);
      assert.equal(await askOnce(server.port, "hi"), "OK ... hi");
    } finally {
      const done = await server.stop();
      assert.equal(done.code, 0, done.stderr);
      assert.doesNotMatch(done.stdout, /reusePort/);
    }
  });
}

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
      await four.stdout.waitFor("4 worker threads sharing the port");
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

Deno.test(`${NAME}: a second pool on the same port is 'port in use', not a silent partner`, async () => {
  const first = await start(["--workers", "2", "--quiet"]);
  try {
    // reusePort would let it join the first pool and take half its clients.
    const second = await runTask(NAME, ["--port", String(first.port), "--workers", "2"]);
    assert.equal(second.code, 1, second.stdout + second.stderr);
    assert.match(second.stderr, new RegExp(`^error: port ${first.port} is already in use`));
    assert.doesNotMatch(second.stdout, /listening on/);
    // Without --allow-read a worker could not load: one error line, not "Uncaught (in worker)".
    const noRead = await new Running([
      "run",
      "--allow-net=127.0.0.1",
      `scripts/${NAME}.ts`,
      "-p",
      "0",
    ])
      .finished();
    assert.equal(noRead.code, 1);
    assert.match(
      noRead.stderr,
      /^error: the workers load scripts\/workers\/pool_worker.ts and lib\/ from disk: run with --allow-read=scripts,lib/,
    );
    assert.equal(noRead.stderr.trim().split("\n").length, 1, noRead.stderr);
  } finally {
    const done = await first.stop();
    assert.equal(done.code, 0, done.stderr);
  }
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

Deno.test(`${NAME}: without unstable net (--no-config) it says so and serves with one worker`, async () => {
  const server = new Running([
    "run",
    "-A",
    "--no-config",
    `scripts/${NAME}.ts`,
    "--port",
    "0",
    "--workers",
    "2",
  ]);
  try {
    const [, port] = await server.stdout.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
    assert.match(
      server.stdout.text,
      /^reusePort needs unstable net \(--unstable-net or "unstable": \["net"\] in deno\.json\): serving with 1 worker\n1 worker thread/,
    );
    assert.equal(await askOnce(Number(port), "still here"), "OK ... still here");
  } finally {
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
    assert.equal(done.stderr, "");
  }
});

Deno.test(`${NAME}: a signal the instant 'listening on' appears: exit 0 within 2 s, 5 times each`, async () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    for (let i = 0; i < 5; i++) {
      const way = WAYS[i % WAYS.length];
      const server = await start(["--quiet"], way);
      server.kill(signal); // no wait at all: the line means "ready, Ctrl+C included"
      const t0 = performance.now();
      const done = await server.finished(5000);
      const ms = performance.now() - t0;
      const label = `${signal} #${i + 1} (${way})`;
      assert.equal(done.signal, null, `${label}: killed by the signal: ${done.stderr}`);
      assert.equal(done.code, 0, `${label}: ${done.stderr}`);
      assert.ok(ms < 2000, `${label}: took ${ms.toFixed(0)} ms`);
      assert.match(done.stdout, /socket_server_threads: shut down\n$/, label);
    }
  }
});

/**
 * A client owed a reply it does not read: a 12 MB line, whose 12 MB answer
 * cannot fit in the socket buffers, so a shutdown must wait out its drain.
 * Resolves once the server has started to answer.
 */
async function owedAReply(server: Server): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const line = new Uint8Array(12_000_001).fill(0x61);
  line[line.length - 1] = 0x0a;
  const sending = writeAll(conn, line);
  const first = new Uint8Array(7);
  const n = await withTimeout(conn.read(first), 10_000, "first reply bytes");
  assert.ok(n !== null && n > 0);
  await sending;
  return conn;
}

Deno.test(`${NAME}: two SIGINTs at once (one Ctrl+C under deno task) are one: a clean shutdown`, async () => {
  const server = await start(["--quiet", "--max-line", "16777216"]);
  const conn = await owedAReply(server).catch(async (err) => {
    await server.stop();
    throw err;
  });
  try {
    const t0 = performance.now();
    server.kill("SIGINT");
    server.kill("SIGINT");
    const done = await server.finished(5000);
    const ms = performance.now() - t0;
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, /socket_server_threads: shut down\n$/);
    assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
  } finally {
    conn.close();
    server.kill("SIGKILL"); // if an assertion failed before it exited
    await server.finished();
  }
});

Deno.test(`${NAME}: a second SIGINT 600 ms later exits at once (130, saying so), without waiting for the drain`, async () => {
  const server = await start(["--quiet", "--max-line", "16777216"]);
  const conn = await owedAReply(server).catch(async (err) => {
    await server.stop();
    throw err;
  });
  try {
    const t0 = performance.now();
    server.kill("SIGINT");
    await new Promise((r) => setTimeout(r, 600)); // the scenario itself: a second Ctrl+C, later
    assert.equal(server.stdout.closed, false, "still draining when the second SIGINT comes");
    server.kill("SIGINT");
    const done = await server.finished(5000);
    const ms = performance.now() - t0;
    assert.equal(done.code, 130, done.stderr); // interrupted, as a shell reports a Ctrl+C
    assert.doesNotMatch(done.stdout, /socket_server_threads: shut down/); // it did not drain
    assert.match(done.stdout, /\nsocket_server_threads: second Ctrl\+C, exiting at once \(/);
    assert.ok(ms < 1400, `took ${ms.toFixed(0)} ms; the drain alone takes 1500`);
  } finally {
    conn.close();
    server.kill("SIGKILL"); // if an assertion failed before it exited
    await server.finished();
  }
});

Deno.test(`${NAME}: --max-conns caps the whole pool, not each worker`, async () => {
  const server = await start(["--workers", "2", "--max-conns", "5", "--quiet"]);
  const held: LineClient[] = [];
  try {
    for (let i = 0; i < 5; i++) {
      const c = await LineClient.connect(server.port);
      held.push(c);
      assert.equal(await c.ask(`held ${i}`), `OK ... held ${i}`); // served, so surely counted
    }
    for (let i = 6; i <= 8; i++) {
      const c = await LineClient.connect(server.port);
      held.push(c);
      assert.equal(await c.line(), "ERR server busy", `client ${i}`);
      assert.equal(await c.line(), null, `client ${i} is closed`);
    }
    held[0].close();
    // A place frees once the worker has seen the close; until then, busy.
    let reply: string | null = null;
    for (let i = 0; i < 50 && reply !== "OK ... again"; i++) {
      reply = await askOnce(server.port, "again");
    }
    assert.equal(reply, "OK ... again");
  } finally {
    for (const c of held) c.close();
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
  }
});

for (const workers of [1, 2]) {
  Deno.test(`${NAME}: --workers ${workers} --crash-after 1: each worker answers its one client, crashes and is replaced; no client is lost`, async () => {
    const server = await start(["--workers", String(workers), "--crash-after", "1"]);
    let refusals = 0;
    try {
      for (let i = 1; i <= 6; i++) {
        // While every worker is at its last client and no replacement listens yet, the
        // port refuses: a client can retry. It must never be accepted and then dropped.
        const { client, refused } = await connectWhileRefused(server.port);
        refusals += refused;
        try {
          assert.equal(await client.ask(`client ${i}`), `OK ... client ${i}`);
          await client.conn.closeWrite();
          assert.equal(await client.line(), null);
        } finally {
          client.close();
        }
      }
      await server.stdout.waitForCount(
        /^worker \d+ crashed \(deliberate crash after 1 client\(s\)\); starting worker \d+ in its place$/m,
        6,
      );
    } catch (err) {
      server.kill("SIGKILL");
      await server.finished();
      throw err;
    }
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
    assert.equal(done.stderr, "");
    // Every worker took one client, the one it crashed after, and no client was cut off.
    const perWorker = new Map<string, number>();
    for (const [, id] of done.stdout.matchAll(/\[worker (\d+)\] Client .* connected/g)) {
      perWorker.set(id, (perWorker.get(id) ?? 0) + 1);
    }
    assert.equal(perWorker.size, 6);
    assert.ok([...perWorker.values()].every((n) => n === 1), JSON.stringify([...perWorker]));
    assert.doesNotMatch(done.stdout, /reset|went away|could not replace/);
    console.log(`  ${refusals} connection attempt(s) refused while no worker listened`);
  });
}
