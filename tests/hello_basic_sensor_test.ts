/**
 * End-to-end: the hello, basic and sensor pairs and the tour, as real
 * processes, against each other and against peers that are not ours.
 */
import assert from "node:assert/strict";
import {
  decoder,
  encoder,
  exchange,
  freePort,
  hasCommand,
  LineClient,
  Running,
  runTask,
  sh,
  startServer,
  taskCommand,
} from "./helpers.ts";
import { LineReader } from "../lib/lines.ts";
import { writeAll } from "../lib/io.ts";

const HAS_NC = hasCommand("nc");
const HAS_PYTHON = hasCommand("python3");

/** Runs a Python snippet; `{PORT}` is replaced by `port`. */
function python(code: string, port: number) {
  return sh(`python3 -c '${code.replaceAll("{PORT}", String(port)).replaceAll("'", "'\\''")}'`);
}

Deno.test("hello pair: greeting, answer, and the server exits 0 after one client", async () => {
  const server = await startServer("hello_server");
  const client = await runTask("hello_client", ["--port", String(server.port)]);
  assert.equal(client.code, 0, client.stderr);
  assert.equal(client.stdout, "Server: Hello client!\n");
  const done = await server.finished();
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stdout, /New client joined: 127\.0\.0\.1:\d+\nClient: Hello Server!\n/);
});

Deno.test({
  name: "hello_server with the seed's own Python client (no newline, then close)",
  ignore: !HAS_PYTHON,
  async fn() {
    const server = await startServer("hello_server");
    const out = await python(
      `from socket import *
c = socket(AF_INET, SOCK_STREAM); c.connect(("127.0.0.1", {PORT}))
print("Server:", c.recv(2048).decode().strip())
c.send("Hello Server!".encode()); c.close()`,
      server.port,
    );
    assert.equal(decoder.decode(out.stdout), "Server: Hello client!\n");
    const done = await server.finished();
    assert.equal(done.code, 0);
    assert.match(done.stdout, /Client: Hello Server!\n/);
  },
});

Deno.test({
  name: "hello_client against nc -l playing the server",
  ignore: !HAS_NC,
  async fn() {
    const port = freePort();
    const nc = sh(`echo 'Hello client!' | nc -l 127.0.0.1 ${port}`);
    const client = await runTask("hello_client", ["--port", String(port)]);
    assert.equal(client.code, 0, client.stderr);
    assert.equal(client.stdout, "Server: Hello client!\n");
    assert.equal(decoder.decode((await nc).stdout), "Hello Server!\n");
  },
});

Deno.test("hello_server --forever serves client after client; a vanishing client is harmless", async () => {
  const server = await startServer("hello_server", ["--port", "0", "--forever"]);
  try {
    const vanish = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    vanish.close();
    for (let i = 0; i < 2; i++) {
      const c = await runTask("hello_client", ["--port", String(server.port), "-m", `client ${i}`]);
      assert.equal(c.code, 0, c.stderr);
      await server.stdout.waitFor(`Client: client ${i}`);
    }
  } finally {
    const done = await server.stop();
    assert.equal(done.code, 0);
  }
});

Deno.test("hello_client with no server: one error line, exit 1", async () => {
  const r = await runTask("hello_client", ["--port", String(freePort())]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: connection refused by 127\.0\.0\.1:\d+ after 3 attempts: /);
});

Deno.test("basic pair: one message, one answer; the server keeps waiting for the next", async () => {
  const server = await startServer("basic_server");
  try {
    await server.stdout.waitFor("Server is running, waiting for connections...");
    for (const message of ["Hello Server !", "second client"]) {
      const r = await runTask("basic_client", ["--port", String(server.port), "-m", message]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `Response from the server: Message received: ${message}\n`);
    }
    // Bytes that are not UTF-8 come back exactly; the connection is then closed.
    const raw = new Uint8Array([0xff, 0x00, 0xc3, 0x0a, 0x41, 0x0a]);
    const reply = await exchange(server.port, raw); // one write: all sent before the server closes
    assert.deepEqual(
      [...reply],
      [...encoder.encode("Message received: "), 0xff, 0x00, 0xc3, 0x0a],
    );
  } finally {
    await server.stop();
  }
});

Deno.test({
  name: "basic_server with nc and with a Python client",
  ignore: !HAS_NC || !HAS_PYTHON,
  async fn() {
    const server = await startServer("basic_server");
    try {
      const nc = await sh(`echo 'Hello Server !' | nc -N 127.0.0.1 ${server.port}`);
      assert.equal(decoder.decode(nc.stdout), "Message received: Hello Server !\n");
      const py = await python(
        `import socket
s = socket.create_connection(("127.0.0.1", {PORT}))
s.sendall(b"Hel"); s.sendall(b"lo\\n")
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(1024)
    if not chunk: break
    data += chunk
print(data.decode(), end=""); s.close()`,
        server.port,
      );
      assert.equal(decoder.decode(py.stdout), "Message received: Hello\n", py.stderr);
    } finally {
      await server.stop();
    }
  },
});

Deno.test("basic_client: refused, never answered, closed early — each an error line and exit 1", async () => {
  const refused = await runTask("basic_client", ["--port", String(freePort())]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^error: connection refused by 127\.0\.0\.1:\d+: is the server/);

  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = String(listener.addr.port);
  const peers = (async () => {
    const mute = await listener.accept(); // never answers
    const rude = await listener.accept(); // closes without answering
    rude.close();
    return mute;
  })();
  const silent = await runTask("basic_client", ["--port", port, "--timeout", "0.3"]);
  assert.equal(silent.code, 1);
  assert.match(silent.stderr, /^error: no reply within 0\.3 s/);
  const early = await runTask("basic_client", ["--port", port]);
  assert.equal(early.code, 1);
  assert.match(early.stderr, /^error: the server closed the connection without answering/);
  (await peers).close();
  listener.close();
});

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

Deno.test("the tour (deno task demo) runs every pair and exits 0", async () => {
  const r = await new Running(taskCommand("demo")).finished(60_000);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /All \d+ pairs worked/);
  assert.doesNotMatch(r.stdout, /✗/);
});
