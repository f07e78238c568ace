/**
 * End-to-end: scripts/sensor_server.ts and scripts/sensor_client.ts as real
 * processes, with each other and with Python and Deno stand-in servers that
 * answer late, cut a pong off, or send lines nobody asked for: a late or
 * cut-off pong is a loss, and a stale pong is never counted as a reply.
 */
import assert from "node:assert/strict";
import {
  decoder,
  encoder,
  exchange,
  hasCommand,
  LineClient,
  Output,
  python,
  Running,
  runTask,
  startServer,
  taskCommand,
  WAIT_MS,
} from "./helpers.ts";
import { LineReader } from "../lib/io.ts";
import { writeAll } from "../lib/io.ts";

const HAS_PYTHON = hasCommand("python3");

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

Deno.test("sensor_server answers 30 concurrent clients, each line with pong, in order", async () => {
  const server = await startServer("sensor_server", ["--port", "0", "--quiet"]);
  try {
    await Promise.all(Array.from({ length: 30 }, async (_, i) => {
      const lines = Array.from({ length: 50 }, (_, j) => `sensor ${i} reading ${j}`).join("\n") +
        "\n";
      const reply = await exchange(server.port, encoder.encode(lines), 13 + i);
      assert.equal(decoder.decode(reply), "pong\n".repeat(50));
    }));
  } finally {
    await server.stop();
  }
});

Deno.test({
  name: "sensor_server with a Python client sending two readings in one send",
  ignore: !HAS_PYTHON,
  async fn() {
    const server = await startServer("sensor_server");
    try {
      const py = await python(
        `import socket
s = socket.create_connection(("127.0.0.1", {PORT}))
s.sendall(b"ping / (1, 102)\\nping / (2, 104)\\n"); s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = s.recv(1024)
    if not chunk: break
    data += chunk
print(data.decode(), end="")`,
        server.port,
      );
      assert.equal(decoder.decode(py.stdout), "pong\npong\n", py.stderr);
      await server.stdout.waitFor("Received: ping / (2, 104)");
    } finally {
      await server.stop();
    }
  },
});

Deno.test("sensor_server: a client vanishing mid-line does not disturb another", async () => {
  const server = await startServer("sensor_server");
  try {
    const steady = await LineClient.connect(server.port);
    assert.equal(await steady.ask("ping"), "pong");
    for (let i = 0; i < 10; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await c.write(encoder.encode("ping / ('half"));
      c.close();
      assert.equal(await steady.ask(`ping ${i}`), "pong");
    }
    steady.close();
  } finally {
    await server.stop();
  }
});

Deno.test("sensor_client --json: one object per sample, values 102, 104, 106, and a summary", async () => {
  const server = await startServer("sensor_server");
  try {
    const r = await runTask("sensor_client", [
      "--port",
      String(server.port),
      "--count",
      "3",
      "--interval",
      "0.05",
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const objects = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(objects.length, 4);
    assert.deepEqual(objects.slice(0, 3).map((o) => o.sent.match(/, (\d+)\)$/)[1]), [
      "102",
      "104",
      "106",
    ]);
    for (const o of objects.slice(0, 3)) {
      assert.match(o.sent, /^ping \/ \('\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}', \d+\)$/);
      assert.equal(o.reply, "pong");
      assert.ok(o.rtt_ms >= 0);
    }
    const { summary } = objects[3];
    assert.equal(summary.sent, 3);
    assert.equal(summary.received, 3);
    assert.equal(summary.loss_pct, 0);
    assert.ok(summary.rtt_ms.min <= summary.rtt_ms.avg && summary.rtt_ms.avg <= summary.rtt_ms.max);
    assert.equal(summary.rtt_ms.p99, summary.rtt_ms.max); // nearest rank of 3 samples
  } finally {
    await server.stop();
  }
});

Deno.test("sensor_client prints its summary on Ctrl+C (SIGINT) and exits 0", async () => {
  const server = await startServer("sensor_server");
  const client = new Running([
    ...taskCommand("sensor_client"),
    "--port",
    String(server.port),
    "--interval",
    "0.05",
  ]);
  try {
    await client.stdout.waitFor(/(Sent: .*\n){2}/);
    client.kill("SIGINT");
    const r = await client.finished();
    assert.equal(r.code, 0, r.stderr);
    const m = r.stdout.match(/(\d+) samples sent, (\d+) received, 0% loss/);
    assert.ok(m, r.stdout);
    assert.ok(Number(m[1]) >= 2);
    assert.match(r.stdout, /rtt min\/avg\/max\/p99 = [\d.]+\/[\d.]+\/[\d.]+\/[\d.]+ ms/);
  } finally {
    await server.stop();
  }
});

Deno.test("sensor_client counts a late reply as lost and does not mistake it for the next", async () => {
  // A server that answers the first sample late, and the rest at once. After
  // the loss the client reconnects: the late pong goes to the closed connection.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let n = 0;
  const talk = async (conn: Deno.TcpConn) => {
    try {
      for await (const line of new LineReader(conn)) {
        const text = decoder.decode(line);
        if (n++ === 1) await new Promise((r) => setTimeout(r, 1500)); // first sample: late
        await writeAll(conn, encoder.encode(`pong ${text.match(/(\d+)\)$/)?.[1] ?? "hello"}\n`));
      }
    } catch {
      // the client closed the first connection under the late reply
    } finally {
      conn.close();
    }
  };
  // Both connections served at once, as a real server would.
  const peer = (async () => {
    const first = talk(await listener.accept());
    await talk(await listener.accept());
    await first;
  })();
  const r = await runTask("sensor_client", [
    "--port",
    String(listener.addr.port),
    "--count",
    "3",
    "--interval",
    "0.01",
    "--timeout",
    "1",
  ]);
  await peer;
  listener.close();
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /102\) \| Packet loss \(Timeout > 1s\)/);
  assert.doesNotMatch(r.stdout, /Received: pong 102/);
  assert.match(r.stdout, /104\) \| Received: pong 104 \|/);
  assert.match(r.stdout, /106\) \| Received: pong 106 \|/);
  assert.match(r.stdout, /3 samples sent, 2 received, 33\.3% loss/);
});

Deno.test("sensor_client against a server that never answers: all lost, summary, exit 0", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const port = String(listener.addr.port);
  const r = await runTask(
    "sensor_client",
    ["--port", port, "--count", "2", "--interval", "0.01", "--timeout", "0.2"],
  );
  (await accepted).close();
  listener.close();
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /ping not answered/);
  assert.equal(r.stdout.match(/Packet loss \(Timeout > 0\.2s\)/g)?.length, 2);
  assert.match(r.stdout, /2 samples sent, 0 received, 100% loss/);
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

// A line nobody asked for is never counted as a reply.
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
