/**
 * End-to-end: the worker pool (scripts/socket_server_threads.ts) at its
 * edges: every way it is run (and the one-worker fallback without unstable
 * net), signals the instant it is ready and doubled, a cap shared by the whole
 * pool, a worker's crash, and, with the two other TcpServer servers, clients
 * that reset before they are accepted and a process out of file descriptors.
 */
import assert from "node:assert/strict";
import {
  hasCommand,
  LineClient,
  Output,
  ROOT,
  Running,
  runTask,
  type Server,
  startServer,
  taskCommand,
  WAYS,
  withTimeout,
} from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

const NAME = "socket_server_threads";
const start = (args: string[], way?: (typeof WAYS)[number]) =>
  startServer(NAME, ["--port", "0", ...args], way);

/** Asks one line of a fresh client and closes it. */
async function askOnce(port: number, text: string): Promise<string | null> {
  const c = await LineClient.connect(port);
  try {
    return await c.ask(text);
  } finally {
    c.close();
  }
}

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
      assert.match(server.stdout.text, /^2 worker thread\(s\) sharing the port\n/);
      assert.equal(await askOnce(server.port, "hi"), "OK ... hi");
    } finally {
      const done = await server.stop();
      assert.equal(done.code, 0, done.stderr);
      assert.doesNotMatch(done.stdout, /reusePort/);
    }
  });
}

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
      /^error: the workers load this file and lib\/ from disk: run with --allow-read=/,
    );
    assert.equal(noRead.stderr.trim().split("\n").length, 1, noRead.stderr);
  } finally {
    const done = await first.stop();
    assert.equal(done.code, 0, done.stderr);
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

Deno.test(`${NAME}: a second SIGINT 600 ms later exits at once, without waiting for the drain`, async () => {
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
    assert.equal(done.code, 0, done.stderr);
    assert.doesNotMatch(done.stdout, /socket_server_threads: shut down/); // it did not drain
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

// ------------------------------------------- the three TcpServer servers at their limits

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
  const workers = name === NAME ? 2 : 1;
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
