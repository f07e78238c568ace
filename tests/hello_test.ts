/**
 * End-to-end: scripts/hello_server.ts and scripts/hello_client.ts as real
 * processes, with each other, with the seed's Python client and with nc.
 */
import assert from "node:assert/strict";
import { decoder, freePort, hasCommand, python, runTask, sh, startServer } from "./helpers.ts";

const HAS_NC = hasCommand("nc");
const HAS_PYTHON = hasCommand("python3");

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

Deno.test("hello_client with no server: each attempt reported, one error line, exit 1", async () => {
  const r = await runTask("hello_client", ["--port", String(freePort())]);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 4, r.stderr);
  assert.match(lines[0], /^attempt 1\/3 failed: Connection refused .*; retrying in \d+ ms$/);
  assert.match(lines[3], /^error: connection refused by 127\.0\.0\.1:\d+ after 3 attempts: /);
});
