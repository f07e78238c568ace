/**
 * End-to-end: scripts/tcp_proxy.ts (lesson 13) as a real process, between
 * real peers: socket_server_with_select with socket_client and `nc -N`
 * through it (a half-close travels: every reply comes back), Deno peers that
 * send and check megabytes of every byte value both ways, Python peers that
 * reset, a target that refuses or never answers, a client that never reads
 * (the proxy stops reading the target: its memory stays bounded and the
 * target's writes block), --idle-timeout, --max-conns, --trace, Ctrl+C at
 * readiness and mid-transfer, and bad flags.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeAll } from "../lib/io.ts";
import {
  decoder,
  denoPeer,
  encoder,
  freePort,
  hasCommand,
  Output,
  readAll,
  Running,
  runTask,
  type Server,
  sh,
  startServer,
  taskCommand,
  WAIT_MS,
  withTimeout,
} from "./helpers.ts";

const HAS_NC = hasCommand("nc");
const HAS_PYTHON = hasCommand("python3");
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** A proxy on a free port relaying to `port` on loopback. */
function proxyTo(port: number | string, ...flags: string[]): Promise<Server> {
  return startServer("tcp_proxy", ["--port", "0", "--to", `127.0.0.1:${port}`, ...flags]);
}

/** Stops `server` with Ctrl+C and checks the clean stop: exit 0 within 2 s, a last line. */
async function stopCleanly(server: Server): Promise<string> {
  const t0 = performance.now();
  server.kill("SIGINT");
  const done = await server.finished(5000);
  const ms = performance.now() - t0;
  assert.equal(done.code, 0, done.stdout + done.stderr);
  assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
  assert.match(done.stdout.trimEnd().split("\n").at(-1)!, /^tcp_proxy: shut down/, done.stdout);
  return done.stdout;
}

/** `n` bytes: every byte value in turn, then a pseudo-random tail (a fixed seed). */
function binary(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    if (i < 256 * 16) out[i] = i & 0xff;
    else {
      x = (x * 1103515245 + 12345) >>> 0;
      out[i] = x >>> 24;
    }
  }
  return out;
}

/** A Python program run in the background; its stdout lines can be awaited. */
function pythonPeer(code: string, ...argv: string[]) {
  const child = new Deno.Command("python3", {
    args: ["-c", code, ...argv],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Output(child.stdout);
  const stderr = new Output(child.stderr);
  return {
    stdout,
    async finish(): Promise<number> {
      await child.stdin.close().catch(() => {});
      const timer = setTimeout(() => child.kill("SIGKILL"), WAIT_MS);
      const { code } = await child.status;
      clearTimeout(timer);
      await Promise.all([stdout.done, stderr.done]);
      return code;
    },
  };
}

Deno.test({
  name:
    "tcp_proxy: nc -N and socket_client through it to socket_server_with_select get every reply",
  async fn() {
    const server = await startServer("socket_server_with_select");
    const proxy = await proxyTo(server.port);
    try {
      if (HAS_NC) {
        // nc -N half-closes after its input: the FIN must travel, and the replies come back.
        const r = await sh(`printf 'a\\nb\\n' | nc -N 127.0.0.1 ${proxy.port}`);
        assert.equal(decoder.decode(r.stdout), "OK ... a\nOK ... b\n", r.stderr);
      }
      const c = await runTask("socket_client", ["--port", String(proxy.port)], "one\ntwo\nthree\n");
      assert.equal(c.code, 0, c.stderr);
      assert.equal(c.stdout, "OK ... one\nOK ... two\nOK ... three\n");
      // Many at once: each client a pair of its own.
      const many = await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
          try {
            await writeAll(conn, encoder.encode(`client ${i}\n`));
            await conn.closeWrite();
            return decoder.decode(await readAll(conn));
          } finally {
            conn.close();
          }
        }),
      );
      many.forEach((reply, i) => assert.equal(reply, `OK ... client ${i}\n`));
      await proxy.stdout.waitForCount(/is offline: \d+ B to the target, \d+ B back/, 21 + +HAS_NC);
      // The server sees the proxy's address: the proxy's log names both.
      assert.match(
        proxy.stdout.text,
        /Client \(127\.0\.0\.1:\d+\) connected, relayed to 127\.0\.0\.1:\d+ from 127\.0\.0\.1:\d+/,
      );
    } finally {
      await stopCleanly(proxy);
      await server.stop();
    }
  },
});

Deno.test("tcp_proxy: megabytes of every byte value, both ways at once, arrive exactly", async () => {
  const up = binary(3 * 1024 * 1024 + 17, 1);
  const down = binary(2 * 1024 * 1024 + 5, 2);
  let received: Uint8Array = new Uint8Array();
  // The target reads everything while it sends its own bytes, then half-closes.
  const target = denoPeer(async (conn) => {
    const reading = readAll(conn);
    await writeAll(conn, down);
    await conn.closeWrite();
    received = await reading;
  });
  const proxy = await proxyTo(target.port);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const reading = readAll(conn);
      reading.catch(() => {});
      for (let at = 0; at < up.length; at += 100_000) {
        await writeAll(conn, up.subarray(at, at + 100_000));
      }
      await conn.closeWrite();
      const got = await reading;
      assert.equal(got.length, down.length);
      assert.equal(sha256(got), sha256(down));
    } finally {
      conn.close();
    }
    await target.done;
    assert.equal(received.length, up.length);
    assert.equal(sha256(received), sha256(up));
    await proxy.stdout.waitFor(`is offline: ${up.length} B to the target, ${down.length} B back`);
  } finally {
    await stopCleanly(proxy);
  }
});

Deno.test("tcp_proxy: a target that refuses: the client is closed with nothing, one log line, the proxy goes on", async () => {
  const port = freePort();
  const proxy = await proxyTo(port);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const got = await readAll(conn).catch((err) => {
        if (err instanceof Deno.errors.ConnectionReset) return new Uint8Array();
        throw err;
      });
      assert.equal(got.length, 0);
    } finally {
      conn.close();
    }
    const why =
      `cannot reach the target 127.0.0.1:${port}: connection refused: is the server running?`;
    await proxy.stdout.waitFor(why);
    assert.equal(proxy.stdout.text.split(why).length, 2, proxy.stdout.text); // one line
    // The target comes up: the next client is relayed.
    const target = Deno.listen({ hostname: "127.0.0.1", port });
    const served = (async () => {
      const c = await target.accept();
      await writeAll(c, encoder.encode("up now\n"));
      c.close();
    })();
    const conn2 = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      assert.equal(decoder.decode(await readAll(conn2)), "up now\n");
    } finally {
      conn2.close();
      await served;
      target.close();
    }
  } finally {
    await stopCleanly(proxy);
  }
});

Deno.test({
  name: "tcp_proxy: a target that never answers the connect: --connect-timeout bounds it",
  ignore: !HAS_PYTHON,
  async fn() {
    // listen(0) and no accept(): once one connection waits in the queue, the kernel drops SYNs.
    const target = pythonPeer(`
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(0)
port = s.getsockname()[1]
fill = []
for _ in range(3):
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(("127.0.0.1", port))
    fill.append(c)
print(port, flush=True)
sys.stdin.read()
`);
    const [, port] = await target.stdout.waitFor(/(\d+)\n/);
    const proxy = await proxyTo(port, "--connect-timeout", "0.5");
    try {
      const t0 = performance.now();
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      try {
        const got = await readAll(conn).catch(() => new Uint8Array());
        assert.equal(got.length, 0);
      } finally {
        conn.close();
      }
      await proxy.stdout.waitFor(
        `cannot reach the target 127.0.0.1:${port}: no answer within 0.5 s (--connect-timeout)`,
      );
      assert.ok(performance.now() - t0 < 5000);
    } finally {
      await stopCleanly(proxy);
      await target.finish();
    }
  },
});

/** Python's close with SO_LINGER 0 sends RST, not FIN (a Deno peer cannot). */
const RESET =
  `s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()`;

Deno.test({
  name: "tcp_proxy: the target's reset closes the client's leg; the proxy says so",
  ignore: !HAS_PYTHON,
  async fn() {
    const target = pythonPeer(`
import socket, struct, sys
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(5)
print(l.getsockname()[1], flush=True)
s, _ = l.accept()
got = b""
while not got.endswith(b"\\n"):
    got += s.recv(100)
${RESET}
sys.stdin.read()
`);
    const [, port] = await target.stdout.waitFor(/(\d+)\n/);
    const proxy = await proxyTo(port);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      try {
        await writeAll(conn, encoder.encode("hello\n"));
        // The client's leg ends: EOF or a reset, and nothing came.
        const got = await readAll(conn).catch((err) => {
          if (err instanceof Deno.errors.ConnectionReset) return new Uint8Array();
          throw err;
        });
        assert.equal(got.length, 0);
      } finally {
        conn.close();
      }
      await proxy.stdout.waitFor(
        /Client \(\S+\): the target reset its connection; closed both legs \(6 B to the target, 0 B back\)/,
      );
    } finally {
      await stopCleanly(proxy);
      await target.finish();
    }
  },
});

Deno.test({
  name: "tcp_proxy: the client's reset closes the target's leg; the proxy says so",
  ignore: !HAS_PYTHON,
  async fn() {
    let ended = "";
    let arrived!: () => void;
    const hello = new Promise<void>((resolve) => arrived = resolve);
    const target = denoPeer(async (conn) => {
      const buf = new Uint8Array(1024);
      try {
        while ((await conn.read(buf)) !== null) arrived(); // until the proxy ends this leg
        ended = "EOF";
      } catch (err) {
        ended = (err as Error).name;
      }
    });
    const proxy = await proxyTo(target.port);
    try {
      const client = pythonPeer(
        `
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"hello\\n")
sys.stdin.readline()
${RESET}
`,
        String(proxy.port),
      );
      await withTimeout(hello, WAIT_MS, "hello at the target");
      assert.equal(await client.finish(), 0); // its stdin closes: it resets
      await target.done;
      assert.ok(ended === "EOF" || ended === "ConnectionReset", ended);
      await proxy.stdout.waitFor(
        /Client \(\S+\): the client reset its connection; closed both legs \(6 B to the target, 0 B back\)/,
      );
    } finally {
      await stopCleanly(proxy);
    }
  },
});

/** The resident memory of process `pid`, in MiB (as `ps` reports it). */
function rssMiB(pid: number): number {
  const out = new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)] }).outputSync();
  return Number(decoder.decode(out.stdout).trim()) / 1024;
}

Deno.test({
  name:
    "tcp_proxy: a client that never reads: the proxy stops reading the target, its memory stays bounded",
  ignore: Deno.build.os === "windows",
  async fn() {
    const MiB = 1024 * 1024;
    const chunk = new Uint8Array(MiB).fill(0x61);
    let sent = 0;
    let lastProgress = performance.now();
    // The target writes up to 100 MiB as fast as the proxy takes it.
    const target = denoPeer(async (conn) => {
      while (sent < 100 * MiB) {
        sent += await conn.write(chunk); // may take part: counted as it goes
        lastProgress = performance.now();
      }
    });
    const proxy = await proxyTo(target.port, "--quiet");
    const pid = proxy.child.pid;
    const before = rssMiB(pid);
    const client = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port }); // never reads
    try {
      // The target's writes block: no progress for a second, well short of 100 MiB (bounded wait).
      const deadline = performance.now() + WAIT_MS;
      while (performance.now() - lastProgress < 1000 || sent === 0) {
        assert.ok(performance.now() < deadline, `still sending after ${sent} bytes`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const after = rssMiB(pid);
      assert.ok(sent < 40 * MiB, `the target sent ${sent} bytes before blocking`);
      // What the kernels hold (socket buffers) is not the proxy's memory: its own stays flat.
      assert.ok(after - before < 24, `proxy RSS grew from ${before} to ${after} MiB`);
      console.log(
        `  target blocked after ${(sent / MiB).toFixed(1)} MiB; proxy RSS ` +
          `${before.toFixed(1)} -> ${after.toFixed(1)} MiB`,
      );
    } finally {
      client.close(); // the proxy closes the target's leg: its blocked write fails, it ends
      await target.done;
      await stopCleanly(proxy);
    }
  },
});

Deno.test("tcp_proxy: Ctrl+C at readiness, and mid-transfer: both legs closed, exit 0 within 2 s", async () => {
  await stopCleanly(await proxyTo(freePort()));

  let targetEnded = false;
  const target = denoPeer(async (conn) => {
    const chunk = new Uint8Array(64 * 1024);
    try {
      for (let i = 0; i < 100_000; i++) await writeAll(conn, chunk); // until the proxy closes
    } finally {
      targetEnded = true;
    }
  });
  const proxy = await proxyTo(target.port);
  const client = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  try {
    const buf = new Uint8Array(64 * 1024);
    let got = 0;
    while (got < 1024 * 1024) got += (await client.read(buf)) ?? 0; // the transfer is under way
    const last = await stopCleanly(proxy);
    assert.match(last, /tcp_proxy: shut down, and closed the 1 client still connected/);
    // The client's leg ends (EOF or reset) after what was in flight.
    await readAll(client).catch((err) => {
      if (!(err instanceof Deno.errors.ConnectionReset)) throw err;
    });
    await target.done;
    assert.ok(targetEnded);
  } finally {
    client.close();
  }
});

Deno.test("tcp_proxy: --idle-timeout closes both legs; --max-conns closes the extra client with nothing", async () => {
  let targetSaw = "";
  const target = denoPeer(async (conn) => {
    targetSaw = (await conn.read(new Uint8Array(10))) === null ? "EOF" : "bytes";
  });
  const proxy = await proxyTo(target.port, "--idle-timeout", "0.3", "--max-conns", "1");
  try {
    const idle = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      await proxy.stdout.waitFor("connected, relayed to");
      const extra = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      try {
        assert.equal((await readAll(extra)).length, 0);
      } finally {
        extra.close();
      }
      await proxy.stdout.waitFor(/: closed at once, proxy full \(--max-conns\)/);
      assert.equal((await readAll(idle)).length, 0); // the idle clock closed our leg
      await target.done;
      assert.equal(targetSaw, "EOF"); // and the target's
      await proxy.stdout.waitFor(
        /: idle for 0\.3 s, closed both legs \(0 B to the target, 0 B back\)/,
      );
    } finally {
      idle.close();
    }
  } finally {
    await stopCleanly(proxy);
  }
});

Deno.test("tcp_proxy --trace shows both legs, labelled client and target", async () => {
  const server = await startServer("socket_server_with_select");
  const proxy = await proxyTo(server.port, "--trace");
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      await writeAll(conn, encoder.encode("hi\n"));
      await conn.closeWrite();
      assert.equal(decoder.decode(await readAll(conn)), "OK ... hi\n");
    } finally {
      conn.close();
    }
    const t = String.raw`\+\d+\.\d{3}s`;
    const c = String.raw`trace client 127\.0\.0\.1:\d+ ${t}`;
    const s = String.raw`trace target 127\.0\.0\.1:${server.port} ${t}`;
    for (
      const line of [
        String.raw`${c} read 3 B "hi\\n"`,
        String.raw`${s} write 3 B "hi\\n"`,
        String.raw`${c} read EOF`,
        String.raw`${s} closeWrite \(we send FIN\)`,
        String.raw`${s} read 10 B "OK \.\.\. hi\\n"`,
        String.raw`${c} write 10 B "OK \.\.\. hi\\n"`,
        String.raw`${c} closeWrite`,
      ]
    ) await proxy.stderr.waitFor(new RegExp(line));
  } finally {
    await stopCleanly(proxy);
    await server.stop();
  }
});

Deno.test("tcp_proxy: --to missing or malformed is a usage error (exit 2), one line", async () => {
  const cases: [string[], RegExp][] = [
    [[], /--to HOST:PORT is required/],
    [["--to", "127.0.0.1"], /invalid --to '127\.0\.0\.1': expected HOST:PORT/],
    [["--to", "127.0.0.1:"], /invalid --to/],
    [["--to", ":8888"], /invalid --to/],
    [["--to", "127.0.0.1:70000"], /invalid --to/],
    [["--to", "127.0.0.1:0"], /invalid --to/],
    [["--to", "::1:8888"], /invalid --to/],
    [["--to", "127.0.0.1:8888", "--connect-timeout", "301"], /invalid --connect-timeout/],
    [["--to"], /option --to needs a value/],
  ];
  for (const [args, message] of cases) {
    const r = await runTask("tcp_proxy", ["--port", "0", ...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^error: .*\(see tcp_proxy --help\)\n$/);
    assert.match(r.stderr, message);
  }
  // [::1]:PORT is a host and a port.
  const proxy = await startServer("tcp_proxy", ["--port", "0", "--to", "[::1]:8888"]);
  assert.match(proxy.stdout.text, /relaying to \[::1\]:8888/);
  await stopCleanly(proxy);
  // A target this task may not reach: a runtime error naming the fix (exit 1).
  const r = await runTask("tcp_proxy", ["--port", "0", "--to", "192.0.2.1:80"]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(
    r.stderr,
    /^error: no permission to connect to 192\.0\.2\.1:80: add 192\.0\.2\.1 to --allow-net\n$/,
  );
});

Deno.test("tcp_proxy: a --to that leads back to the proxy itself is a usage error, whatever its spelling", async () => {
  // Each case: where the proxy listens, and a --to for the same port that reaches it (or not);
  // run with `--allow-net`, or as the task (loopback only: nothing may prompt).
  const run = async (host: string, target: string, way: "--allow-net" | "task" = "--allow-net") => {
    const port = freePort(); // the proxy's port, named in --to before it listens
    const flags = ["--host", host, "--port", `${port}`, "--to", `${target}:${port}`];
    const argv = way === "task"
      ? [...taskCommand("tcp_proxy"), ...flags]
      : ["run", "--allow-net", "scripts/tcp_proxy.ts", ...flags];
    const running = new Running(argv, "null");
    const started = await running.stdout.waitFor(/listening on/).then(() => true, () => false);
    if (!started) return await running.finished(WAIT_MS); // refused to start
    running.kill("SIGINT"); // it started: not taken for a loop
    await running.finished(5000);
    return undefined;
  };
  const loops: [string, string, ("--allow-net" | "task")?][] = [
    ["127.0.0.1", "127.1"],
    ["127.0.0.1", "localhost"],
    ["127.0.0.1", "localhost", "task"],
    ["127.0.0.1", "0.0.0.0"],
    ["127.0.0.1", "[::ffff:127.0.0.1]"],
    ["::1", "[::1]", "task"],
    ["::", "localhost"],
    ["0.0.0.0", "127.0.0.2"],
    ["::", "127.0.0.1"],
  ];
  for (const [host, target, way] of loops) {
    const done = await run(host, target, way);
    const what = `--host ${host} --to ${target} (${way ?? "--allow-net"})`;
    assert.ok(done, `${what}: it started, and would relay to itself`);
    assert.equal(done.code, 2, `${what}: ${done.stderr}`);
    assert.match(
      done.stderr,
      /^error: --to \S+ is this proxy itself: each client would open another/,
    );
  }
  // The same port on an address it does not listen on is another server's (none here: refused).
  assert.equal(await run("127.0.0.1", "127.0.0.2"), undefined);
  assert.equal(await run("127.0.0.1", "[::1]"), undefined);
  assert.equal(await run("127.0.0.1", "[::1]", "task"), undefined);
});
