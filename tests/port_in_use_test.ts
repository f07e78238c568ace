/**
 * A port "in use" when a server starts, as real processes: held by another
 * server, the error says to stop it; held only by a connection still closing
 * (TIME-WAIT, left by an earlier client whose port the kernel had lent it
 * from the range a server's port may lie in), the error says that, and that
 * no server listens there.
 *
 * @module
 */
import assert from "node:assert/strict";
import { runTask } from "./helpers.ts";

/** Every server, with the flags it needs besides --port. */
const SERVERS: Record<string, string[]> = {
  socket_server: [],
  socket_server_with_select: [],
  socket_server_threads: ["--workers", "2"],
  sensor_server: [],
  basic_server: [],
  hello_server: [],
  tcp_server: [],
  chat_server: [],
  http_server: [],
};

/**
 * Leaves a connection in TIME-WAIT on a loopback port and returns that port:
 * a client connects and closes first (the side that closes first waits out
 * TIME-WAIT, about a minute on Linux), so its local port stays held with no
 * server on it, as after a test run.
 */
async function timeWaitPort(): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const accepted = await listener.accept();
  const port = client.localAddr.port;
  client.close(); // FIN from the client first
  assert.equal(await accepted.read(new Uint8Array(1)), null); // its FIN arrived
  accepted.close(); // the client's side now waits in TIME-WAIT
  listener.close();
  // The premise: the port cannot be listened on, and nothing answers a connect to it.
  assert.throws(() => Deno.listen({ hostname: "127.0.0.1", port }), Deno.errors.AddrInUse);
  await assert.rejects(
    () => Deno.connect({ hostname: "127.0.0.1", port }),
    Deno.errors.ConnectionRefused,
  );
  return port;
}

Deno.test("a port held only by a connection in TIME-WAIT: every server says so, not 'stop the other server'", async () => {
  const port = await timeWaitPort();
  await Promise.all(
    Object.entries(SERVERS).map(async ([name, args]) => {
      const r = await runTask(name, ["--port", String(port), ...args]);
      assert.equal(r.code, 1, `${name}: ${r.stdout}${r.stderr}`);
      assert.equal(
        r.stderr,
        `error: port ${port} on 127.0.0.1 is held by a connection, most likely one still closing ` +
          "(TIME-WAIT), not by a server: wait a minute, or pick another --port " +
          `(--port 0 takes a free one); see: ss -tan | grep :${port}\n`,
        name,
      );
    }),
  );
});

Deno.test("a port another server listens on: every server says to stop it", async () => {
  const other = Deno.listen({ hostname: "127.0.0.1", port: 0 }); // never accepts: that is fine
  const port = other.addr.port;
  try {
    await Promise.all(
      Object.entries(SERVERS).map(async ([name, args]) => {
        const r = await runTask(name, ["--port", String(port), ...args]);
        assert.equal(r.code, 1, `${name}: ${r.stdout}${r.stderr}`);
        assert.equal(
          r.stderr,
          `error: port ${port} is already in use on 127.0.0.1: stop the other server, ` +
            "or pick another --port (--port 0 takes a free one)\n",
          name,
        );
      }),
    );
  } finally {
    other.close();
  }
});
