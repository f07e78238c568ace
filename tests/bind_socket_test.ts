/**
 * End-to-end: scripts/bind_socket.ts (resolve a name, then connect) as a real
 * process, against a local HTTP server: each step is printed only once it
 * has happened, and a failure is one error line. Nothing here needs the
 * Internet.
 */
import assert from "node:assert/strict";
import { denoPeer, encoder, freePort, hasCommand, runTask } from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

const HAS_PYTHON = hasCommand("python3");

Deno.test({
  name: "bind_socket resolves localhost through the hosts file and sends HEAD / to a local server",
  ignore: !HAS_PYTHON,
  async fn() {
    const port = freePort();
    const http = new Deno.Command("python3", {
      args: ["-m", "http.server", String(port), "--bind", "127.0.0.1"],
      stdout: "null",
      stderr: "piped",
      cwd: "/tmp",
    }).spawn();
    try {
      // Wait until the Python server listens (it takes a moment to start).
      for (let i = 0; i < 200; i++) {
        const probe = await Deno.connect({ hostname: "127.0.0.1", port }).catch(() => null);
        if (probe) {
          probe.close();
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const r = await runTask("bind_socket", [
        "--host",
        "localhost",
        "-p",
        String(port),
        "--request",
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stdout,
        `IP address of localhost is 127.0.0.1\nSocket created\n` +
          `Socket connected to localhost on ip 127.0.0.1 port ${port}\nHTTP/1.0 200 OK\n`,
      );
    } finally {
      http.kill();
      await http.stderr.cancel();
      await http.status;
    }
  },
});

Deno.test("bind_socket fails with one error line for an unknown name and a refused port", async () => {
  // A 64-letter label is not a valid DNS name: the resolver rejects it without
  // sending a query, so this test stays on this machine.
  const unknown = await runTask("bind_socket", ["--host", `${"x".repeat(64)}.invalid`]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /^error: cannot resolve x{64}\.invalid/);
  assert.equal(unknown.stderr.trim().split("\n").length, 1);
  const refused = await runTask("bind_socket", ["--host", "localhost", "-p", String(freePort())]);
  assert.equal(refused.code, 1);
  assert.match(
    refused.stderr,
    /^error: cannot connect to localhost \(127\.0\.0\.1\) port \d+: Connection refused/,
  );
});

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
