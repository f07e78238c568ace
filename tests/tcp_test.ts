/**
 * End-to-end: scripts/tcp_server.ts and scripts/tcp_client.ts (exact 32-byte
 * messages, prompts, retries) as real processes, with each other, with Python
 * and nc, and with an IPv6 stand-in server.
 */
import assert from "node:assert/strict";
import {
  decoder,
  denoPeer,
  freePort,
  hasCommand,
  Output,
  readAll,
  Running,
  runTask,
  sh,
  startServer,
  taskCommand,
  WAIT_MS,
} from "./helpers.ts";

const HAS_NC = hasCommand("nc");
const HAS_PYTHON = hasCommand("python3");
const TWOS = Array(32).fill("02").join(" ");

Deno.test("tcp_client sends 32 bytes of 0x02 to tcp_server, which prints them in hex", async () => {
  const server = await startServer("tcp_server");
  try {
    const r = await runTask("tcp_client", ["--host", "127.0.0.1", "--port", String(server.port)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `connected to 127.0.0.1:${server.port}\nsent 32 bytes of 0x02\n`);
    await server.stdout.waitFor(`sent 32 bytes: ${TWOS}`);
  } finally {
    await server.stop();
  }
});

Deno.test("tcp_server and tcp_client answer their prompts from piped stdin", async () => {
  const server = new Running(taskCommand("tcp_server"), "piped");
  const w = server.child.stdin.getWriter();
  await w.write(new TextEncoder().encode("0\n"));
  await w.close();
  const m = await server.stdout.waitFor(/Enter the local port: \nlistening on 127\.0\.0\.1:(\d+)/);
  try {
    const r = await runTask("tcp_client", [], `127.0.0.1\n${m[1]}\n`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Enter the remote IP address: \nEnter the remote port: \nconnected/);
    await server.stdout.waitFor("sent 32 bytes");
  } finally {
    await server.stop();
  }
  const bad = await runTask("tcp_server", [], "not a port\n");
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^error: invalid answer 'not a port'/);
});

Deno.test("tcp_server reads 32 bytes fed one at a time, ignores bytes past 32", async () => {
  const server = await startServer("tcp_server");
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    conn.setNoDelay(true);
    for (let i = 0; i < 32; i++) await conn.write(new Uint8Array([i]));
    await conn.write(new Uint8Array([0xee, 0xee])); // not part of the message
    const hex = Array.from({ length: 32 }, (_, i) => i.toString(16).padStart(2, "0")).join(" ");
    await server.stdout.waitFor(`sent 32 bytes: ${hex}\n`);
    await readAll(conn); // the server closes after the message
    conn.close();
  } finally {
    await server.stop();
  }
});

Deno.test("tcp_server reports a client that sends 7 bytes then EOF, and keeps going", async () => {
  const server = await startServer("tcp_server");
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await conn.write(new Uint8Array(7).fill(0x41));
    await conn.closeWrite();
    await server.stdout.waitFor(/closed after 7 of 32 bytes/);
    conn.close();
    const r = await runTask("tcp_client", ["--host", "127.0.0.1", "-p", String(server.port)]);
    assert.equal(r.code, 0, r.stderr);
    await server.stdout.waitFor(`sent 32 bytes: ${TWOS}`);
  } finally {
    await server.stop();
  }
});

Deno.test("tcp_server drops a client whose message is not in within --timeout", async () => {
  const server = await startServer("tcp_server", ["--port", "0", "--timeout", "0.3"]);
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await conn.write(new Uint8Array(3));
    await server.stdout.waitFor(/: not all 32 bytes within 0\.3 s, disconnected/);
    conn.close();
  } finally {
    await server.stop();
  }
});

Deno.test({
  name: "tcp_client against a Python server that checks for exactly 32 x 0x02",
  ignore: !HAS_PYTHON,
  async fn() {
    const script = `
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
data = b""
while True:
    chunk = conn.recv(7)
    if not chunk: break
    data += chunk
print("OK" if data == bytes([2]) * 32 else "BAD %r" % data, flush=True)
`;
    const child = new Deno.Command("python3", {
      args: ["-c", script],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const out = new Output(child.stdout);
    const port = (await out.waitFor(/^(\d+)\n/))[1];
    const r = await runTask("tcp_client", ["--host", "127.0.0.1", "-p", port]);
    assert.equal(r.code, 0, r.stderr);
    await out.waitFor(/^(OK|BAD.*)$/m);
    await child.status;
    await out.done;
    assert.match(out.text, /^OK$/m);
  },
});

Deno.test({
  name: "tcp_client against nc -l",
  ignore: !HAS_NC,
  async fn() {
    const port = freePort();
    const nc = sh(`nc -l 127.0.0.1 ${port} | od -v -An -tx1 | tr -s ' \\n' ' '`);
    const client = await runTask("tcp_client", [
      "--host",
      "127.0.0.1",
      "-p",
      String(port),
      "--attempts",
      "10",
    ]);
    assert.equal(client.code, 0, client.stderr);
    const out = await nc;
    assert.equal(decoder.decode(out.stdout).trim(), TWOS);
  },
});

Deno.test("tcp_client retries until a server started after its first failure", async () => {
  const port = freePort();
  const client = new Running([
    ...taskCommand("tcp_client"),
    "--host",
    "127.0.0.1",
    "-p",
    String(port),
    "--attempts",
    "10",
  ]);
  await client.stderr.waitFor(
    /attempt 1\/10 failed: Connection refused \(os error 111\); retrying in \d+ ms/,
  );
  const server = await startServer("tcp_server", ["--port", String(port)]);
  try {
    const r = await client.finished();
    assert.equal(r.code, 0, r.stderr);
    await server.stdout.waitFor(`sent 32 bytes: ${TWOS}`);
  } finally {
    await server.stop();
  }
});

Deno.test("tcp_client with no server gives up after 5 attempts with an error line", async () => {
  const port = freePort();
  const r = await runTask(
    "tcp_client",
    ["--host", "127.0.0.1", "-p", String(port)],
    undefined,
    WAIT_MS * 2,
  );
  assert.equal(r.code, 1);
  assert.equal(r.stderr.match(/^attempt \d\/5 failed/gm)?.length, 5, r.stderr);
  assert.equal(r.stdout, "");
  assert.match(
    r.stderr,
    new RegExp(`\\nerror: connection refused by 127\\.0\\.0\\.1:${port} after 5 attempts: `),
  );
});

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
