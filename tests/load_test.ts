/**
 * Servers under load, from outside, as real processes: a probe among 100
 * flooding clients is answered in time whatever the shape of the flood;
 * clients that each sent one burst leave no big buffers behind; a log that
 * nobody reads never stops a server (nor its Ctrl+C), and says what it
 * dropped once it is read again.
 *
 * The bounds are generous, for a loaded machine: the benchmark (`deno task
 * bench`) measures the real figures, side by side with the code before.
 */
import assert from "node:assert/strict";
import { decoder, encoder, hasCommand, ROOT, startServer, taskCommand } from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

/** bench/flood.c compiled once. */
let floodBinary: string | undefined;
async function compileFlood(): Promise<string> {
  if (floodBinary) return floodBinary;
  const dir = Deno.makeTempDirSync({ prefix: "load-test-" });
  const cc = await new Deno.Command("cc", {
    args: ["-O2", "-o", `${dir}/flood`, `${ROOT}bench/flood.c`],
  }).output();
  assert.ok(cc.success, decoder.decode(cc.stderr));
  return floodBinary = `${dir}/flood`;
}

// Two shapes of flood, because a fairness rule can hold for one and fail the
// other. Closed loop: each flooder sends 64 KiB of lines, reads every reply,
// repeats; 100 of them, each answering in the time the server takes to serve
// the other 99, kept the event loop from ever polling the kernel, and the
// probe waited over a second (1.3 s at c3b52c3). Open loop: each flooder
// writes whenever its socket takes more.
const FLOODED: [string, "ok" | "pong"][] = [
  ["socket_server_with_select", "ok"],
  ["socket_server_threads", "ok"],
  ["sensor_server", "pong"],
];
for (const [name, reply] of FLOODED) {
  for (const shape of ["closed", "open"] as const) {
    Deno.test({
      name:
        `${name}: a probe among 100 clients flooding it (${shape} loop) is answered within 700 ms`,
      ignore: !hasCommand("cc"),
      async fn() {
        const server = await startServer(name, ["--port", "0", "--quiet"]);
        try {
          // The flood and the probe run natively in their own process, so that
          // neither waits on this test's event loop. 3 s: the probe asks at
          // 0.5 s, then 200 ms after each answer.
          const out = await new Deno.Command(await compileFlood(), {
            args: [shape, String(server.port), "100", "3", reply],
          }).output();
          const result = decoder.decode(out.stdout).trim();
          assert.ok(out.success, result + decoder.decode(out.stderr));
          console.log(`${name}, ${shape} flood: ${result}`);
          const worst = Number(result.match(/worst_ms=([\d.]+)/)![1]);
          const probes = Number(result.match(/probes=(\d+)/)![1]);
          assert.ok(worst < 700, `the probe waited ${worst} ms`);
          assert.ok(probes >= 5, `only ${probes} probes answered in 3 s`);
        } finally {
          const done = await server.stop();
          assert.equal(done.code, 0, done.stderr);
        }
      },
    });
  }
}

/** Resident memory of a process, in KiB (read by `ps`: Deno grants /proc only with -A). */
function rssKiB(pid: number): number {
  const out = new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)] }).outputSync();
  return Number(decoder.decode(out.stdout).trim());
}

for (
  const [name, reply] of [["socket_server_with_select", 60_008], ["sensor_server", 5]] as const
) {
  Deno.test({
    name: `${name}: 400 clients that each sent one 60 KB line hold under 60 KiB each while idle`,
    ignore: !hasCommand("ps"),
    async fn() {
      const server = await startServer(name, ["--port", "0", "--quiet"]);
      const conns: Deno.TcpConn[] = [];
      try {
        const line = encoder.encode("b".repeat(60_000) + "\n");
        const buf = new Uint8Array(64 * 1024);
        const burst = async () => {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
          conns.push(conn);
          await writeAll(conn, line);
          for (let got = 0; got < reply;) { // the whole reply: then the server is idle again
            const n = await conn.read(buf);
            assert.ok(n !== null, "the server closed the connection");
            got += n;
          }
        };
        for (let i = 0; i < 20; i++) await burst(); // warm up
        const before = rssKiB(server.child.pid);
        for (let i = 0; i < 400; i++) await burst(); // one after another, each left connected
        const perClient = (rssKiB(server.child.pid) - before) / 400;
        console.log(`${name}: ${perClient.toFixed(1)} KiB per idle client after a 60 KB line`);
        // Buffers kept for each client would be some 190 KiB each (c3b52c3).
        assert.ok(perClient < 60, `${perClient.toFixed(1)} KiB per idle client`);
      } finally {
        for (const conn of conns) conn.close();
        const done = await server.stop();
        assert.equal(done.code, 0, done.stderr);
      }
    },
  });
}

/**
 * A server whose stdout (or stderr) is a pipe that nobody reads: the pipe
 * fills after 64 KiB of log. `clients` connect one after another, each sends
 * a line, reads its reply and leaves (each a couple of log lines); every one
 * must be answered, and SIGTERM must end the server within 2 s. (At c3b52c3
 * the server stopped answering at client 824, and was still running 3 s
 * after SIGTERM.)
 */
async function serveWithUnreadOutput(
  task: string,
  args: string[],
  unread: "stdout" | "stderr",
  clients: number,
  line = "hello",
): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...taskCommand(task), "--port", "0", ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  // stdout is read up to `listening on`; after that, only if it is not the unread one.
  const stdout = child.stdout.getReader();
  let seen = "";
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  };
  try {
    while (!/listening on \S+:\d+\n/.test(seen)) {
      const r = await stdout.read();
      assert.ok(!r.done, `${task} ended before listening: ${seen}`);
      seen += decoder.decode(r.value);
    }
  } catch (err) {
    kill();
    throw err;
  }
  const port = Number(seen.match(/listening on \S+:(\d+)/)![1]);
  const drain = async (reader: ReadableStreamDefaultReader<Uint8Array>) => {
    while (!(await reader.read()).done) { /* a reader that keeps up */ }
  };
  const reading = unread === "stdout" ? drain(child.stderr.getReader()) : drain(stdout);
  try {
    const hello = encoder.encode(`${line}\n`);
    const buf = new Uint8Array(64);
    const t0 = performance.now();
    for (let i = 0; i < clients; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await writeAll(conn, hello);
        // A frozen server never answers: the timer closes the connection, the read fails.
        const timer = setTimeout(() => conn.close(), 5000);
        const n = await conn.read(buf).catch(() => null);
        clearTimeout(timer);
        assert.ok(n !== null && n > 0, `client ${i + 1} of ${clients} got no answer`);
      } finally {
        try {
          conn.close();
        } catch { /* closed by the timer */ }
      }
    }
    const s = ((performance.now() - t0) / 1000).toFixed(1);
    console.log(
      `${task} ${args.join(" ")}: ${clients} clients answered in ${s} s, ${unread} unread`,
    );
    const stopped = performance.now();
    child.kill("SIGTERM");
    const timer = setTimeout(kill, 5000);
    const status = await child.status;
    clearTimeout(timer);
    const ms = performance.now() - stopped;
    assert.equal(status.signal, null, `SIGTERM with ${unread} unread: still running after 5 s`);
    assert.equal(status.code, 0);
    assert.ok(ms < 2000, `SIGTERM with ${unread} unread took ${ms.toFixed(0)} ms`);
  } finally {
    kill();
    await child.status;
    await (unread === "stdout" ? stdout : child.stderr).cancel().catch(() => {});
    await reading.catch(() => {});
  }
}

Deno.test("socket_server_with_select keeps serving, and stops on SIGTERM, while nobody reads its stdout", async () => {
  await serveWithUnreadOutput("socket_server_with_select", [], "stdout", 1500);
});

Deno.test("socket_server_with_select --trace keeps serving, and stops on SIGTERM, while nobody reads its stderr", async () => {
  await serveWithUnreadOutput("socket_server_with_select", ["--trace", "--quiet"], "stderr", 600);
});

Deno.test("socket_server_threads keeps serving, and stops on SIGTERM, while nobody reads its stdout", async () => {
  await serveWithUnreadOutput("socket_server_threads", [], "stdout", 1500);
});

// The one-client servers log through the same queue: a reader that stalls must not freeze them
// either (console.log would: hello_server stopped answering at client 257 and ignored SIGTERM).
Deno.test("hello_server --forever keeps serving, and stops on SIGTERM, while nobody reads its stdout", async () => {
  await serveWithUnreadOutput("hello_server", ["--forever"], "stdout", 1000, "x".repeat(200));
});

Deno.test("basic_server --trace keeps serving, and stops on SIGTERM, while nobody reads its stderr", async () => {
  await serveWithUnreadOutput("basic_server", ["--trace"], "stderr", 600, "x".repeat(200));
});
