/**
 * End-to-end: scripts/udp_server.ts and scripts/udp_client.ts as real
 * processes, with each other, with a Python peer, and with a stand-in server
 * (a Deno datagram socket in this file) that answers out of order, twice,
 * late, with a seq never sent, and with garbage: the client matches every
 * reply by its sequence number and counts each kind exactly.
 */
import assert from "node:assert/strict";
import {
  hasCommand,
  python,
  Running,
  scriptCommand,
  type Server,
  startServer,
  taskCommand,
  WAIT_MS,
  WAYS,
  withTimeout,
} from "./helpers.ts";

const HAS_PYTHON = hasCommand("python3");
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Runs udp_client (as its task unless told) against `port` with `args`, to its end. */
function client(port: number, args: string[], way: (typeof WAYS)[number] = "task") {
  const { argv, cwd } = scriptCommand("udp_client", way);
  return new Running([...argv, "--port", String(port), ...args], "null", cwd);
}

/** Python: sends each datagram of `sends` (bytes literals) to the server, prints the reply to each ping. */
const PY_PEER = (sends: string[], family = "AF_INET", host = "127.0.0.1") => `
import re, socket
s = socket.socket(socket.${family}, socket.SOCK_DGRAM)
s.settimeout(5)
for d in [${sends.join(", ")}]:
    s.sendto(d, ("${host}", {PORT}))
    if re.fullmatch(rb"ping \\d+\\n?", d):
        print(s.recvfrom(2048)[0].decode())
`;

Deno.test({
  name:
    "udp_server: a Python peer's pings get 'pong <seq>'; garbage and over-size datagrams are ignored with an escaped log line",
  ignore: !HAS_PYTHON,
}, async () => {
  const server = await startServer("udp_server");
  try {
    assert.match(server.stdout.text, /^listening on 127\.0\.0\.1:\d+ \(UDP\)\n/);
    const sends = [
      `b"ping 1"`,
      `b"hello \\x1b[2J\\xff"`, // control bytes and invalid UTF-8
      `b"x" * 1473`, // one byte over an Ethernet frame's worth
      `b"ping 2"`,
      `b"ping 3 " + b"x" * 1465`, // 1,472 bytes: not over-size, but not a ping
      `b"ping 33\\n"`, // as nc sends a typed line
    ];
    const r = await python(PY_PEER(sends), server.port);
    assert.equal(r.code, 0, r.stderr);
    // Each reply is exactly `pong <seq>`: no newline, in a datagram of its own.
    assert.equal(decoder.decode(r.stdout), "pong 1\npong 2\npong 33\n");
    await server.stdout.waitFor(/Received: ping 33 \(from 127\.0\.0\.1:\d+\)/);
    const log = server.stdout.text;
    assert.match(log, /Received: ping 1 \(from 127\.0\.0\.1:\d+\)\n/);
    assert.match(
      log,
      /Ignored: 'hello \\x1b\[2J\\xff', not 'ping <seq>' \(from 127\.0\.0\.1:\d+\)/,
    );
    assert.match(log, /Ignored: a 1473-byte datagram, over 1472 \(from /);
    assert.match(log, /Ignored: 'ping 3 x+\.\.\. \(1472 bytes\)', not 'ping <seq>'/);
    assert.ok(!log.includes("\x1b"), "a peer's escape byte reached the log raw");
  } finally {
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
  }
});

Deno.test({
  name: "udp_server on ::1: 'listening on [::1]:PORT', and it answers over IPv6",
  ignore: !HAS_PYTHON,
}, async () => {
  const server = await startServer("udp_server", ["--host", "::1", "--port", "0"]);
  try {
    assert.match(server.stdout.text, /listening on \[::1\]:\d+/);
    const r = await python(PY_PEER([`b"ping 7"`], "AF_INET6", "::1"), server.port);
    assert.equal(decoder.decode(r.stdout), "pong 7\n", r.stderr);
    const done = await client(server.port, ["--host", "::1", "--count", "2", "--interval", "0"])
      .finished();
    assert.equal(done.code, 0, done.stderr);
    assert.match(
      done.stdout,
      /--- \[::1\]:\d+ udp ping statistics ---\n2 sent, 2 received, 0% loss/,
    );
  } finally {
    await server.stop();
  }
});

Deno.test("udp_client against udp_server (--drop 0), run every way: exact counts, round trips, exit 0", async () => {
  const server = await startServer("udp_server", ["--port", "0", "--quiet"]);
  try {
    for (const way of WAYS) {
      const done = await client(server.port, ["--count", "5", "--interval", "0"], way).finished();
      assert.equal(done.code, 0, `${way}: ${done.stdout}${done.stderr}`);
      const lines = done.stdout.trimEnd().split("\n");
      for (let seq = 1; seq <= 5; seq++) {
        assert.match(lines[seq - 1], new RegExp(`^pong ${seq} from 127\\.0\\.0\\.1:\\d+: time=`));
      }
      assert.deepEqual(lines.slice(5, 8), [
        `--- 127.0.0.1:${server.port} udp ping statistics ---`,
        "5 sent, 5 received, 0% loss",
        "0 late, 0 duplicate, 0 out of order, 0 ignored",
      ]);
      assert.match(lines[8], /^rtt min\/avg\/max\/p99 = [\d.]+\/[\d.]+\/[\d.]+\/[\d.]+ ms$/);
      assert.equal(lines.length, 9, done.stdout);
    }
  } finally {
    await server.stop();
  }
});

Deno.test({
  name: "a server bound to 0.0.0.0 may answer from another of its addresses: the client takes it",
  ignore: Deno.build.os !== "linux", // 127.0.0.2 is loopback on Linux; elsewhere, an alias to add
  fn: async () => {
    const server = await startServer("udp_server", ["--host", "0.0.0.0", "--port", "0"], "run -A");
    try {
      // Pinged at 127.0.0.2, it answers from 127.0.0.1 (the route's source address).
      const done = await client(server.port, ["--host", "127.0.0.2", "--count", "2"], "run -A")
        .finished();
      assert.equal(done.code, 0, done.stdout + done.stderr);
      assert.match(
        done.stdout,
        /2 sent, 2 received, 0% loss\n0 late, 0 duplicate, 0 out of order, 0 ignored/,
      );
    } finally {
      await server.stop();
    }
  },
});

Deno.test("udp_client against udp_server --drop 1: every ping lost, 100% loss, exit 1, no round trips", async () => {
  const server = await startServer("udp_server", ["--port", "0", "--drop", "1"]);
  try {
    const done = await client(server.port, ["--count", "3", "--interval", "0", "--timeout", "0.2"])
      .finished();
    assert.equal(done.code, 1, done.stdout + done.stderr);
    assert.match(done.stdout, /no reply to ping 1 within 0\.2 s\n/);
    assert.match(
      done.stdout,
      /\n3 sent, 0 received, 100% loss\n0 late, 0 duplicate, 0 out of order/,
    );
    assert.doesNotMatch(done.stdout, /rtt/);
    assert.equal(done.stderr, "", "100% loss is a result, not an error line");
    assert.match(server.stdout.text, /Dropped: ping 3, as a lossy network would \(--drop\)/);
  } finally {
    await server.stop();
  }
});

/** A stand-in server: a datagram socket on loopback, closed by `close()`. */
function fakeServer() {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (socket.addr as Deno.NetAddr).port;
  return {
    port,
    /** The next datagram, as text, and who sent it; fails after WAIT_MS. */
    async receive(): Promise<[string, Deno.Addr]> {
      const [data, from] = await withTimeout(
        socket.receive(),
        WAIT_MS,
        "a ping",
        () => socket.close(),
      );
      return [decoder.decode(data), from];
    },
    async send(text: string | Uint8Array, to: Deno.Addr) {
      await socket.send(typeof text === "string" ? encoder.encode(text) : text, to);
    },
    close: () => socket.close(),
  };
}

Deno.test("udp_client matches by seq: out of order, duplicate, a seq never sent, garbage and a stranger are each counted as such", async () => {
  const fake = fakeServer();
  const stranger = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const run = client(fake.port, ["--count", "3", "--interval", "0", "--timeout", "10"]);
  try {
    const pings: string[] = [];
    let from: Deno.Addr | undefined;
    for (let i = 0; i < 3; i++) {
      const [text, addr] = await fake.receive();
      pings.push(text);
      from = addr;
    }
    assert.deepEqual(pings, ["ping 1", "ping 2", "ping 3"]); // exactly, no newline
    await fake.send("pong 3", from!);
    await fake.send("pong 1", from!); // out of order: 3 came first
    await fake.send("pong 1", from!); // duplicate
    await fake.send("pong 99", from!); // never sent: ignored
    await fake.send(new Uint8Array([0x70, 0x6f, 0x1b, 0x5b, 0x32, 0x4a, 0xff]), from!); // garbage
    await stranger.send(encoder.encode("pong 2"), from!); // right seq, wrong sender: ignored
    await run.stdout.waitFor(/Ignored 'pong 2': from 127\.0\.0\.1:\d+, not the server's port/);
    await fake.send("pong 2", from!); // out of order too; the last one owed: the run ends
    const done = await run.finished();
    assert.equal(done.code, 0, done.stdout + done.stderr);
    const out = done.stdout;
    assert.match(out, /pong 1 from [\d.:]+: time=[\d.]+ ms \(out of order: pong 3 came first\)\n/);
    assert.match(out, /pong 1 from [\d.:]+: time=[\d.]+ ms \(duplicate: counted once\)\n/);
    assert.match(out, /Ignored 'pong 99': no ping 99 was sent\n/);
    assert.match(out, /Ignored 'po\\x1b\[2J\\xff': not 'pong <seq>'\n/);
    assert.match(
      out,
      /\n3 sent, 3 received, 0% loss\n0 late, 1 duplicate, 2 out of order, 3 ignored\n/,
    );
    assert.ok(!out.includes("\x1b"), "a peer's escape byte reached the terminal raw");
  } finally {
    run.kill("SIGKILL");
    await run.finished();
    fake.close();
    stranger.close();
  }
});

Deno.test("udp_client: a reply after --timeout is late and lost, and its repeat a duplicate; the next ping is unaffected", async () => {
  const fake = fakeServer();
  // Ping 2 goes out 2 s after ping 1: the late reply to ping 1 has time to arrive before it.
  const run = client(fake.port, ["--count", "2", "--interval", "2", "--timeout", "0.5"]);
  try {
    const [first, from] = await fake.receive();
    assert.equal(first, "ping 1");
    await run.stdout.waitFor("no reply to ping 1 within 0.5 s"); // the client gave up on it
    await fake.send("pong 1", from);
    await fake.send("pong 1", from);
    await run.stdout.waitFor(/duplicate: counted once/);
    const [second] = await fake.receive();
    assert.equal(second, "ping 2");
    await fake.send("pong 2", from);
    const done = await run.finished();
    assert.equal(done.code, 0, done.stdout + done.stderr);
    assert.match(
      done.stdout,
      /pong 1 from [\d.:]+: time=[\d.]+ ms \(late: after --timeout, lost\)\n/,
    );
    assert.match(done.stdout, /pong 2 from [\d.:]+: time=[\d.]+ ms\n/);
    assert.match(
      done.stdout,
      /\n2 sent, 1 received, 50% loss\n1 late, 1 duplicate, 0 out of order, 0 ignored\n/,
    );
  } finally {
    run.kill("SIGKILL");
    await run.finished();
    fake.close();
  }
});

Deno.test("udp_client: no server at all does not hang it: --timeout bounds the wait, then 100% loss, exit 1", async () => {
  const fake = fakeServer(); // a port that nobody answers on
  try {
    const done = await client(fake.port, ["--count", "2", "--interval", "0", "--timeout", "0.2"])
      .finished(WAIT_MS);
    assert.equal(done.code, 1, done.stdout + done.stderr);
    assert.match(done.stdout, /\n2 sent, 0 received, 100% loss\n/);
    assert.equal(done.stderr, "");
  } finally {
    fake.close();
  }
});

/** Sends `signal` to `server`, and checks the clean stop: exit 0 within 2 s, the last line. */
async function stopsCleanly(server: Server, signal: Deno.Signal, last: RegExp) {
  const t0 = performance.now();
  server.kill(signal);
  const done = await server.finished(5000);
  const ms = performance.now() - t0;
  assert.equal(done.code, 0, `${signal}: ${done.stdout}${done.stderr}`);
  assert.ok(ms < 2000, `${signal}: took ${ms.toFixed(0)} ms`);
  assert.match(done.stdout, last);
  assert.equal(done.stderr, "");
}

Deno.test("udp_server: Ctrl+C or SIGTERM the moment it is ready stops it, exit 0 within 2 s", async () => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    const server = await startServer("udp_server");
    await stopsCleanly(server, signal, /udp_server: shut down\n$/);
  }
});

Deno.test({
  name: "udp_server: SIGTERM sends the replies --delay still holds, then stops",
  ignore: !HAS_PYTHON,
}, async () => {
  const server = await startServer("udp_server", ["--port", "0", "--delay", "10000"]);
  const peer = python(PY_PEER([`b"ping 1"`]), server.port); // waits for its pong
  try {
    await server.stdout.waitFor("Received: ping 1");
    // Held for up to 10 s: with odds of 1 in 50, it is not sent yet. Either way, it is not lost.
    await stopsCleanly(
      server,
      "SIGTERM",
      /udp_server: shut down(, after sending the 1 held reply now)?\n$/,
    );
    const r = await peer;
    assert.equal(decoder.decode(r.stdout), "pong 1\n", r.stderr);
  } finally {
    await peer;
  }
});

Deno.test("bad flags: one error line, exit 2", async () => {
  const cases: [string, string[], RegExp][] = [
    ["udp_server", ["--drop", "1.5"], /invalid --drop '1\.5': expected a number from 0 to 1/],
    ["udp_server", ["--drop", "-0.1"], /invalid --drop '-0\.1'/],
    [
      "udp_server",
      ["--delay", "10001"],
      /invalid --delay '10001': expected a whole number from 0 to 10000/,
    ],
    ["udp_server", ["--port", "abc"], /invalid --port 'abc'/],
    ["udp_server", ["--bogus"], /unknown option --bogus/],
    [
      "udp_client",
      ["--timeout", "0"],
      /invalid --timeout '0': expected a number of seconds from 0\.001/,
    ],
    ["udp_client", ["--count", "-1"], /invalid --count '-1'/],
    ["udp_client", ["--port", "70000"], /invalid --port '70000'/],
  ];
  await Promise.all(cases.map(async ([name, args, error]) => {
    const done = await new Running([...taskCommand(name), ...args]).finished();
    assert.equal(done.code, 2, `${name} ${args}: ${done.stderr}`);
    assert.match(done.stderr, new RegExp(`^error: ${error.source}.*\\(see ${name} --help\\)\\n$`));
  }));
});

Deno.test("--help says the scripts need unstable net, and shows every duration's maximum", async () => {
  for (const name of ["udp_server", "udp_client"]) {
    const done = await new Running([...taskCommand(name), "--help"]).finished();
    assert.equal(done.code, 0);
    assert.match(done.stdout, /Needs unstable net .*--unstable-net/);
  }
  const server = await new Running([...taskCommand("udp_server"), "--help"]).finished();
  assert.match(server.stdout, /--drop P .*\(default 0, max 1\)/);
  assert.match(server.stdout, /--delay MS .*\(default 0, max 10000\)/);
});

Deno.test("udp_server on a UDP port in use: one error line, exit 1", async () => {
  const other = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (other.addr as Deno.NetAddr).port;
  try {
    const done = await new Running([...taskCommand("udp_server"), "--port", String(port)])
      .finished();
    assert.equal(done.code, 1, done.stdout + done.stderr);
    assert.equal(
      done.stderr,
      `error: port ${port} is already in use on 127.0.0.1: stop the other server, or pick ` +
        "another --port (--port 0 takes a free one)\n",
    );
  } finally {
    other.close();
  }
});

Deno.test("udp_client: a host its task may not reach: one error line naming the permission, exit 1", async () => {
  const done = await client(9, ["--host", "example.invalid"]).finished();
  assert.equal(done.code, 1, done.stdout + done.stderr);
  assert.equal(
    done.stderr,
    "error: cannot resolve host example.invalid (no permission: run with --allow-net=example.invalid)\n",
  );
});

Deno.test("without --unstable-net (a copy run outside the project): one error line, exit 1", async () => {
  const done = await new Running([
    "run",
    "--no-config",
    "--allow-net=127.0.0.1",
    "scripts/udp_server.ts",
    "--port",
    "0",
  ]).finished();
  assert.equal(done.code, 1, done.stdout + done.stderr);
  assert.equal(done.stderr, "error: Deno.listenDatagram is unstable: run with --unstable-net\n");
});

Deno.test("--trace: each datagram, sent and received, with its address and its bytes escaped", async () => {
  const server = await startServer("udp_server", ["--port", "0", "--trace"]);
  try {
    const done = await client(server.port, ["--count", "1", "--trace"]).finished();
    assert.equal(done.code, 0, done.stderr);
    const at = `127\\.0\\.0\\.1:${server.port} \\+[\\d.]+s`;
    assert.match(done.stderr, new RegExp(`trace ${at} sent 6 B "ping 1"\\n`));
    assert.match(done.stderr, new RegExp(`trace ${at} received 6 B "pong 1"\\n`));
    await server.stderr.waitFor(/trace 127\.0\.0\.1:\d+ \+[\d.]+s sent 6 B "pong 1"\n/);
    assert.match(server.stderr.text, /trace 127\.0\.0\.1:\d+ \+[\d.]+s received 6 B "ping 1"\n/);
  } finally {
    await server.stop();
  }
});
