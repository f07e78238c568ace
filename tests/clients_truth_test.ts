/**
 * The clients say exactly what happened: a cut-off reply is not a reply, a
 * late pong is a loss, a server's control bytes never reach the terminal raw,
 * IPv6 peers are written `[::1]:PORT`, and each step is printed only once it
 * has happened. The servers here are hostile peers (Deno or Python), not ours.
 */
import assert from "node:assert/strict";
import { LineReader } from "../lib/lines.ts";
import { writeAll } from "../lib/io.ts";
import { encoder, freePort, hasCommand, Output, runTask, WAIT_MS } from "./helpers.ts";

const HAS_PYTHON = hasCommand("python3");

/** What a raw control byte looks like in output: ESC, BEL, CR, or a byte that is not UTF-8. */
// deno-lint-ignore no-control-regex
const RAW_CONTROL = /[\x1b\x07\r\ufffd]/;
/** A reply meant to retitle the window, clear the screen and overwrite a line. */
const HOSTILE = "\x1b]0;pwned\x07\x1b[2Jfake\rline";
const HOSTILE_SHOWN = String.raw`\x1b]0;pwned\x07\x1b[2Jfake\rline\xff`;
const hostileBytes = (prefix: string) =>
  new Uint8Array([...encoder.encode(prefix + HOSTILE), 0xff, 0x0a]);

/**
 * A Deno peer on `hostname`: each connection is handed to `talk`, up to
 * `connections` of them. `done` resolves once every one has ended.
 */
function denoPeer(
  talk: (conn: Deno.TcpConn, lines: LineReader) => Promise<void>,
  { hostname = "127.0.0.1", connections = 1 } = {},
) {
  const listener = Deno.listen({ hostname, port: 0 });
  const done = (async () => {
    try {
      for (let i = 0; i < connections; i++) {
        const conn = await listener.accept();
        try {
          await talk(conn, new LineReader(conn));
        } catch {
          // the client may leave first: only what it printed matters here
        } finally {
          try {
            conn.close();
          } catch { /* closed by talk */ }
        }
      }
    } finally {
      listener.close();
    }
  })();
  return { port: String(listener.addr.port), done };
}

/** Answers each line with `reply(line)` until the client leaves. */
function answering(reply: (line: string) => Uint8Array | string) {
  return async (conn: Deno.TcpConn, lines: LineReader) => {
    for await (const line of lines) {
      const r = reply(new TextDecoder().decode(line));
      await writeAll(conn, typeof r === "string" ? encoder.encode(r) : r);
    }
  };
}

/** Runs a Python server `script` that prints its port first; `stop()` kills it. */
async function pythonServer(script: string, args: string[] = []) {
  const child = new Deno.Command("python3", {
    args: ["-c", script, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const out = new Output(child.stdout);
  const port = (await out.waitFor(/^(\d+)\n/, WAIT_MS))[1];
  return {
    port,
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await out.done;
    },
  };
}

/**
 * A Python line server on a free port, one thread per connection. `answer`
 * is the body of `def answer(line)`, returning `(delay_s, reply_bytes,
 * close_after)`; a reply of `None` is never sent.
 */
function pythonPeer(answer: string) {
  return pythonServer(`
import socket, threading, time
def answer(line):
${answer.trim().split("\n").map((l) => "    " + l).join("\n")}
def serve(c):
    buf = b""
    with c:
        while True:
            data = c.recv(4096)
            if not data: return
            buf += data
            while b"\\n" in buf:
                line, buf = buf.split(b"\\n", 1)
                delay, reply, close = answer(line)
                time.sleep(delay)
                try:
                    if reply is not None: c.sendall(reply)
                except OSError:
                    return
                if close: return
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(16)
print(srv.getsockname()[1], flush=True)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`);
}

/**
 * A pong server that sends more than it is asked for (Python, one thread per
 * connection), by `mode`:
 * - `dead`: the first line of a connection gets three pongs, later lines none;
 * - `twice`: every line gets two pongs at once;
 * - `early`: a pong as soon as the client connects, then one per line;
 * - `lagging`: every line gets a pong, and 50 ms later another.
 */
function extraLinesPeer(mode: "dead" | "twice" | "early" | "lagging") {
  return pythonServer(
    `
import socket, sys, threading, time
mode = sys.argv[1]
def serve(c):
    try:
        with c:
            if mode == "early": c.sendall(b"pong\\n")
            n = 0
            for line in c.makefile("rb"):
                n += 1
                if mode == "dead":
                    if n == 1: c.sendall(b"pong\\npong\\npong\\n")
                elif mode == "twice": c.sendall(b"pong\\npong\\n")
                elif mode == "early": c.sendall(b"pong\\n")
                elif mode == "lagging":
                    c.sendall(b"pong\\n"); time.sleep(0.05); c.sendall(b"pong\\n")
    except OSError:
        pass
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(16)
print(srv.getsockname()[1], flush=True)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`,
    [mode],
  );
}

// 1. A cut-off reply is not a reply.

Deno.test("socket_client: a reply cut off by the server closing is an error, not a reply", async () => {
  const peer = denoPeer(async (conn, lines) => {
    await lines.readLine();
    await writeAll(conn, encoder.encode("OK ... hel")); // no newline, then close
  });
  const r = await runTask("socket_client", ["-p", peer.port, "-m", "hello"]);
  await peer.done;
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, "");
  assert.match(
    r.stderr,
    /\nerror: the reply was cut off: 127\.0\.0\.1:\d+ closed the connection after 'OK \.\.\. hel' \(no newline\)\n$/,
  );
});

Deno.test({
  name: "sensor_client: a cut-off pong is a loss, never a pong (Python peer)",
  ignore: !HAS_PYTHON,
  async fn() {
    const peer = await pythonPeer(`
if line.endswith(b"102)"): return (0, b"pon", True)
return (0, b"pong\\n", False)`);
    try {
      const r = await runTask("sensor_client", [
        ...["-p", peer.port, "--count", "3", "--interval", "0.01", "--timeout", "5"],
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stdout,
        /102\) \| Packet loss \(reply cut off: 'pon' then connection closed\)/,
      );
      assert.doesNotMatch(r.stdout, /102\) \| Received/);
      assert.match(r.stdout, /104\) \| Received: pong \|/);
      assert.match(r.stdout, /106\) \| Received: pong \|/);
      assert.match(r.stdout, /3 samples sent, 2 received, 33\.3% loss/);
    } finally {
      await peer.stop();
    }
  },
});

// 2. sensor_client: late is lost, measured from the send, and never misattributed.

Deno.test({
  name: "sensor_client: a ping 1.5 s late and sample 102 1.25 s late with --timeout 1 are lost",
  ignore: !HAS_PYTHON,
  async fn() {
    const peer = await pythonPeer(`
if line == b"ping": return (1.5, b"pong\\n", False)
if line.endswith(b"102)"): return (1.25, b"pong\\n", False)
return (0, b"pong\\n", False)`);
    try {
      const r = await runTask("sensor_client", [
        ...["-p", peer.port, "--count", "3", "--interval", "0.01", "--timeout", "1"],
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /; ping not answered \(Timeout > 1s\)\n/);
      assert.match(r.stdout, /102\) \| Packet loss \(Timeout > 1s\)\n/);
      assert.doesNotMatch(r.stdout, /102\) \| Received/);
      assert.match(r.stdout, /104\) \| Received: pong \| RTT: [\d.]+ ms\n/);
      assert.match(r.stdout, /106\) \| Received: pong \| RTT: [\d.]+ ms\n/);
      assert.match(r.stdout, /3 samples sent, 2 received, 33\.3% loss/);
      // Every rtt counted is within the timeout.
      const max = Number(r.stdout.match(/rtt min\/avg\/max\/p99 = [\d.]+\/[\d.]+\/([\d.]+)/)![1]);
      assert.ok(max <= 1000, r.stdout);
      assert.match(r.stderr, /reconnecting/);
    } finally {
      await peer.stop();
    }
  },
});

Deno.test({
  name: "sensor_client: one sample never answered is one loss, not every later one",
  ignore: !HAS_PYTHON,
  async fn() {
    const peer = await pythonPeer(`
if line.endswith(b"102)"): return (0, None, False)
return (0, b"pong\\n", False)`);
    try {
      const r = await runTask("sensor_client", [
        ...["-p", peer.port, "--count", "4", "--interval", "0.01", "--timeout", "1"],
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /ping answered in/);
      assert.match(r.stdout, /102\) \| Packet loss \(Timeout > 1s\)/);
      for (const value of [104, 106, 108]) {
        assert.match(r.stdout, new RegExp(`${value}\\) \\| Received: pong \\|`));
      }
      assert.match(r.stdout, /4 samples sent, 3 received, 25% loss/);
    } finally {
      await peer.stop();
    }
  },
});

// 2b. sensor_client: a line nobody asked for is never counted as a reply.
//
// The pong protocol has no ids, so a stale pong looks like a fresh one. A
// server that sends extra or early lines must not make lost samples look
// received: the client holds it to one line per request, counts the sample
// the extra line could have answered as lost, and reconnects.

for (const mode of ["dead", "twice", "early", "lagging"] as const) {
  Deno.test({
    name:
      `sensor_client: extra pongs (${mode} server) are protocol errors; no stale pong is counted`,
    ignore: !HAS_PYTHON,
    async fn() {
      const peer = await extraLinesPeer(mode);
      try {
        // The pause (--interval) is longer than the Python server takes to
        // answer, even on a busy machine: each extra line comes within it.
        const r = await runTask("sensor_client", [
          ...["-p", peer.port, "--count", "4", "--interval", "0.25", "--timeout", "2"],
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /\n4 samples sent, 0 received, 100% loss\n$/, r.stdout);
        assert.doesNotMatch(r.stdout, /rtt min/);
        // Every sample ends lost: at once, or named lost by a later Protocol error line.
        for (const value of [102, 104, 106, 108]) {
          assert.match(
            r.stdout,
            new RegExp(
              `${value}\\) \\| Packet loss \\(protocol error: unsolicited line 'pong' ` +
                `|Protocol error: unsolicited line 'pong' after the reply to sample ${value}: ` +
                `sample ${value} counted as lost\\n`,
            ),
            r.stdout,
          );
        }
        assert.match(r.stderr, /protocol error.*: reconnecting/);
        if (mode === "lagging") {
          // The extra line comes after the reply was printed: the correction follows it.
          assert.match(
            r.stdout,
            /102\) \| Received: pong \| RTT: [\d.]+ ms\nProtocol error: unsolicited line 'pong' after the reply to sample 102: sample 102 counted as lost\n/,
          );
        }
      } finally {
        await peer.stop();
      }
    },
  });
}

Deno.test({
  name: "sensor_client --json: an extra line after a reply adds a lost object for that seq",
  ignore: !HAS_PYTHON,
  async fn() {
    const peer = await extraLinesPeer("lagging");
    try {
      const r = await runTask("sensor_client", [
        ...["-p", peer.port, "--count", "2", "--interval", "0.25", "--timeout", "2", "--json"],
      ]);
      assert.equal(r.code, 0, r.stderr);
      const objects = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
      const last = new Map<number, { lost?: boolean; why?: string }>();
      for (const o of objects.slice(0, -1)) last.set(o.seq, o);
      assert.deepEqual([...last.keys()], [1, 2]);
      for (const o of last.values()) {
        assert.equal(o.lost, true);
        assert.match(o.why!, /^protocol error: unsolicited line 'pong'/);
      }
      assert.deepEqual(objects.at(-1).summary, {
        sent: 2,
        received: 0,
        loss_pct: 100,
        rtt_ms: null,
      });
      assert.match(
        r.stderr,
        /Protocol error: unsolicited line 'pong' after the reply to the opening ping/,
      );
    } finally {
      await peer.stop();
    }
  },
});

Deno.test({
  name: "sensor_client: bytes of a line nobody asked for (no newline yet) are unsolicited too",
  ignore: !HAS_PYTHON,
  async fn() {
    // Each reply comes with the start of another line behind it.
    const peer = await pythonPeer(`return (0, b"pong\\npo", False)`);
    try {
      const r = await runTask("sensor_client", [
        ...["-p", peer.port, "--count", "2", "--interval", "0.05", "--timeout", "2"],
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stdout,
        /102\) \| Packet loss \(protocol error: unsolicited bytes 'po' \(no newline yet\)|Protocol error: unsolicited bytes 'po' \(no newline yet\) after the reply to sample 102/,
      );
      assert.match(r.stdout, /\n2 samples sent, 0 received, 100% loss\n$/);
    } finally {
      await peer.stop();
    }
  },
});

// 3. A message is one line; an input line over the limit is named; replies are shown as bytes.

Deno.test("socket_client: a --message with a newline or CR is a usage error, nothing sent", async () => {
  for (const m of ["one\ntwo", "one\rtwo"]) {
    const r = await runTask("socket_client", ["-p", String(freePort()), "-m", m, "-m", "three"]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, "");
    assert.match(
      r.stderr,
      /^error: --message 'one\\[nr]two' holds a line break: .*\(see socket_client --help\)\n$/,
    );
  }
  for (const task of ["hello_client", "basic_client"]) {
    const r = await runTask(task, ["-p", String(freePort()), "-m", "a\nb"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^error: --message must be one line.*\\(see ${task} --help\\)\\n$`),
    );
  }
});

Deno.test("socket_client: a stdin line over the limit is named as the input's line 3", async () => {
  const peer = denoPeer(answering((line) => `OK ... ${line}\n`));
  const input = `first\nsecond\n${"x".repeat(70_000)}\nfourth\n`;
  const r = await runTask("socket_client", ["-p", peer.port], input);
  await peer.done;
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, "OK ... first\nOK ... second\n");
  assert.match(r.stderr, /\nerror: input line 3 is longer than 65536 bytes\n$/);
});

// 3 and 6. A server's control bytes and invalid UTF-8 are printed escaped.

Deno.test("socket_client, hello_client, basic_client, sensor_client print a server's control bytes escaped", async () => {
  const socketPeer = denoPeer(answering(() => hostileBytes("OK ... ")));
  const socket = await runTask("socket_client", ["-p", socketPeer.port, "-m", "x"]);
  await socketPeer.done;
  assert.equal(socket.code, 0, socket.stderr);
  assert.equal(socket.stdout, `OK ... ${HOSTILE_SHOWN}\n`);

  const helloPeer = denoPeer(async (conn, lines) => {
    await writeAll(conn, hostileBytes("Hello "));
    await lines.readLine();
  });
  const hello = await runTask("hello_client", ["-p", helloPeer.port]);
  await helloPeer.done;
  assert.equal(hello.code, 0, hello.stderr);
  assert.equal(hello.stdout, `Server: Hello ${HOSTILE_SHOWN}\n`);

  const basicPeer = denoPeer(async (conn, lines) => {
    await lines.readLine();
    await writeAll(conn, hostileBytes("Message received: "));
  });
  const basic = await runTask("basic_client", ["-p", basicPeer.port]);
  await basicPeer.done;
  assert.equal(basic.code, 0, basic.stderr);
  assert.equal(basic.stdout, `Response from the server: Message received: ${HOSTILE_SHOWN}\n`);

  const sensorPeer = denoPeer(answering(() => hostileBytes("pong")));
  const sensor = await runTask("sensor_client", [
    ...["-p", sensorPeer.port, "--count", "1", "--interval", "0.05", "--timeout", "5"],
  ]);
  await sensorPeer.done;
  assert.equal(sensor.code, 0, sensor.stderr);
  assert.match(
    sensor.stdout,
    /102\) \| Received: pong\\x1b\]0;pwned\\x07\\x1b\[2Jfake\\rline\\xff \|/,
  );

  for (const r of [socket, hello, basic, sensor]) {
    assert.doesNotMatch(r.stdout + r.stderr, RAW_CONTROL);
  }
});

// 4. IPv6 peers in brackets.

Deno.test("clients write an IPv6 peer as [::1]:PORT", async () => {
  const socketPeer = denoPeer(answering((line) => `OK ... ${line}\n`), { hostname: "::1" });
  const socket = await runTask("socket_client", [
    "--host",
    "::1",
    "-p",
    socketPeer.port,
    "-m",
    "hi",
  ]);
  await socketPeer.done;
  assert.equal(socket.code, 0, socket.stderr);
  assert.equal(socket.stdout, "OK ... hi\n");
  assert.match(socket.stderr, new RegExp(`connected to \\[::1\\]:${socketPeer.port}\\n`));

  const sensorPeer = denoPeer(answering(() => "pong\n"), { hostname: "::1" });
  const sensor = await runTask("sensor_client", [
    ...["--host", "::1", "-p", sensorPeer.port, "--count", "1", "--interval", "0.05"],
    "--timeout",
    "5",
  ]);
  await sensorPeer.done;
  assert.equal(sensor.code, 0, sensor.stderr);
  assert.match(sensor.stdout, new RegExp(`^Connected to \\[::1\\]:${sensorPeer.port} in `));
  assert.match(
    sensor.stdout,
    new RegExp(`\\n--- \\[::1\\]:${sensorPeer.port} sensor statistics ---\\n`),
  );

  const tcpPeer = denoPeer(async (conn) => void await conn.read(new Uint8Array(64)), {
    hostname: "::1",
  });
  const tcp = await runTask("tcp_client", ["--host", "::1", "-p", tcpPeer.port]);
  await tcpPeer.done;
  assert.equal(tcp.code, 0, tcp.stderr);
  assert.match(tcp.stdout, new RegExp(`^connected to \\[::1\\]:${tcpPeer.port}\\n`));

  const refused = await runTask("socket_client", [
    ...["--host", "::1", "-p", String(freePort()), "--attempts", "1", "-m", "x"],
  ]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /\nerror: connection refused by \[::1\]:\d+ after 1 attempt: /);
});

// 4b. tcp_client: port 0 is not a place to connect to; a bracketed IPv6 answer is an address.

Deno.test("tcp_client --port 0 is a usage error: a port from 1 to 65535", async () => {
  for (const args of [["--host", "127.0.0.1", "--port", "0"], ["-p", "0"]]) {
    const r = await runTask("tcp_client", args);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, "");
    assert.equal(
      r.stderr,
      "error: invalid --port '0': expected a port from 1 to 65535 (see tcp_client --help)\n",
    );
  }
});

Deno.test("tcp_client: the address prompt takes [::1] as ::1", async () => {
  const peer = denoPeer(async (conn) => void await conn.read(new Uint8Array(64)), {
    hostname: "::1",
  });
  const r = await runTask("tcp_client", [], `[::1]\n${peer.port}\n`);
  await peer.done;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    `Enter the remote IP address: \nEnter the remote port: \n` +
      `connected to [::1]:${peer.port}\nsent 32 bytes of 0x02\n`,
  );
});

// 5. bind_socket prints each step only once it has happened.

Deno.test("bind_socket: an unresolvable name prints no step, only the error", async () => {
  // A 64-letter label is not a valid DNS name: the resolver rejects it without a query.
  const r = await runTask("bind_socket", ["--host", `${"a".repeat(64)}.invalid`]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, ""); // no "Socket created" for a socket never made
  assert.match(r.stderr, /^error: cannot resolve a{64}\.invalid/);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);

  const refused = await runTask("bind_socket", ["--host", "localhost", "-p", String(freePort())]);
  assert.equal(refused.code, 1);
  assert.equal(refused.stdout, "IP address of localhost is 127.0.0.1\n");
});

Deno.test("bind_socket: resolve, then created and connected, then the status line escaped", async () => {
  const peer = denoPeer(async (conn, lines) => {
    while ((await lines.readLine())?.length) { /* the request's header lines */ }
    await writeAll(conn, encoder.encode("HTTP/1.1 200 \x1b[2JO\rK\r\n\r\n"));
  });
  const r = await runTask("bind_socket", ["--host", "localhost", "-p", peer.port, "--request"]);
  await peer.done;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    `IP address of localhost is 127.0.0.1\nSocket created\n` +
      `Socket connected to localhost on ip 127.0.0.1 port ${peer.port}\n` +
      String.raw`HTTP/1.1 200 \x1b[2JO\rK` + "\n",
  );
});

// 11. Truthful usage: no empty tour, help that says what happens, refused says what to do, maxima.

Deno.test("demo --only with no match is a usage error naming the pairs", async () => {
  const r = await runTask("demo", ["--only", "nothing"]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.doesNotMatch(r.stdout, /All 0 pairs/);
  assert.match(
    r.stderr,
    /^error: no pair's title contains 'nothing'; the pairs are: .*sensor_server \+ sensor_client.*\(see demo --help\)\n$/,
  );
});

Deno.test("socket_client --help says what is sent without -m: stdin lines, or one sample on a terminal", async () => {
  const r = await runTask("socket_client", ["--help"]);
  assert.equal(r.code, 0);
  assert.match(
    r.stdout,
    /--message TEXT +.*each line of stdin when stdin is a pipe or file; on a terminal, or with empty input, one sample reading/,
  );
  assert.match(r.stdout, /--attempts N +.*\(default 5, max 100\)/);
});

Deno.test("a refused connection after all attempts says what to do, on the port it tried", async () => {
  const port = String(freePort());
  const cases: [string, string[], string][] = [
    ["socket_client", ["-p", port, "--attempts", "2", "-m", "x"], "after 2 attempts"],
    ["tcp_client", ["--host", "127.0.0.1", "-p", port, "--attempts", "1"], "after 1 attempt"],
    ["hello_client", ["-p", port], "after 3 attempts"],
    ["basic_client", ["-p", port], ""],
  ];
  for (const [task, args, after] of cases) {
    const r = await runTask(task, args);
    assert.equal(r.code, 1, `${task}: ${r.stderr}`);
    const server = task.replace("client", "server");
    assert.match(
      r.stderr,
      new RegExp(
        `(^|\\n)error: connection refused by 127\\.0\\.0\\.1:${port}${after ? ` ${after}` : ""}: ` +
          `is the server running\\? start it with deno task ${server} --port ${port}\\n$`,
      ),
      r.stderr,
    );
  }
});

Deno.test("numeric flags past their maximum are usage errors (sensor_client --interval 3000000)", async () => {
  const cases: [string, string[]][] = [
    ["sensor_client", ["--interval", "3000000"]],
    ["sensor_client", ["--count", "1000001"]],
    ["socket_client", ["--attempts", "101"]],
    ["tcp_client", ["--size", "1048577"]],
    ["tcp_client", ["--attempts", "101"]],
    ["basic_client", ["--timeout", "86401"]],
  ];
  for (const [task, args] of cases) {
    const r = await runTask(task, ["-p", String(freePort()), ...args]);
    assert.equal(r.code, 2, `${task} ${args.join(" ")}: ${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(
        `^error: invalid ${args[0]} '${args[1]}': .* to \\d+ \\(see ${task} --help\\)\\n$`,
      ),
    );
  }
  const help = await runTask("sensor_client", ["--help"]);
  assert.match(help.stdout, /--interval SECONDS +.*\(default 1, max 3600\)/);
  assert.match(help.stdout, /--count N +.*\(default 0, max 1000000\)/);
});
