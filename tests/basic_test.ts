/**
 * End-to-end: scripts/basic_server.ts and scripts/basic_client.ts as real
 * processes, with each other, with nc and Python, and with stand-in servers
 * that refuse, never answer, or close without answering.
 */
import assert from "node:assert/strict";
import {
  decoder,
  encoder,
  exchange,
  freePort,
  hasCommand,
  python,
  readAll,
  runTask,
  sh,
  startServer,
} from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

const HAS_NC = hasCommand("nc");
const HAS_PYTHON = hasCommand("python3");

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

Deno.test("basic_server --timeout 0 means never: a message after a pause is answered", async () => {
  const server = await startServer("basic_server", ["--port", "0", "--timeout", "0"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await new Promise((r) => setTimeout(r, 500)); // the pause is what is tested
    await writeAll(conn, encoder.encode("late\n"));
    assert.equal(decoder.decode(await readAll(conn)), "Message received: late\n");
  } finally {
    conn.close();
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
  }
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
  assert.match(silent.stderr, /^error: no reply from 127\.0\.0\.1:\d+ within 0\.3 s/); // names the server
  const early = await runTask("basic_client", ["--port", port]);
  assert.equal(early.code, 1);
  assert.match(early.stderr, /^error: the server closed the connection without answering/);
  (await peers).close();
  listener.close();
});
