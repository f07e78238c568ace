/**
 * End-to-end: scripts/chat_server.ts and scripts/chat_client.ts as real
 * processes, with our own clients, nc, a client that never reads, one that
 * floods the room, and a stand-in room that cuts a line off.
 */
import assert from "node:assert/strict";
import {
  decoder,
  encoder,
  floodAndRead,
  hasCommand,
  LineClient,
  Running,
  runTask,
  type Server,
  sh,
  startServer,
  taskCommand,
  WAIT_MS,
  withTimeout,
} from "./helpers.ts";

type Join = (name: string) => Promise<LineClient>;

/**
 * Runs `body` against a fresh chat_server (`--port 0` and `extra` flags) with
 * `join`, which connects a client and takes a name. Every client is closed
 * and the server stopped afterwards, whatever happens.
 */
async function withRoom(extra: string[], body: (server: Server, join: Join) => Promise<void>) {
  const server = await startServer("chat_server", ["--port", "0", ...extra]);
  const clients: LineClient[] = [];
  try {
    await body(server, async (name) => {
      const c = await LineClient.connect(server.port);
      clients.push(c);
      assert.equal(await c.line(), "* name?");
      assert.match(await c.ask(name) ?? "", new RegExp(`^\\* welcome ${name}; `));
      return c;
    });
  } finally {
    for (const c of clients) c.close();
    await server.stop();
  }
}

/** Reads lines until one equals `want`; returns the lines before it. Bounded by count and time. */
async function until(c: LineClient, want: string, max = 100_000): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < max; i++) {
    const line = await c.line();
    if (line === want) return seen;
    if (line === null) throw new Error(`closed before '${want}'; saw ${seen.slice(-5)}`);
    seen.push(line);
  }
  throw new Error(`no '${want}' in ${max} lines`);
}

Deno.test("chat: three clients see each other's lines, in order, with the right names", () =>
  withRoom(["--quiet"], async (_, join) => {
    const alice = await join("alice");
    const bob = await join("bob");
    assert.equal(await alice.line(), "* bob joined");
    const carol = await join("carol");
    assert.equal(await alice.line(), "* carol joined");
    assert.equal(await bob.line(), "* carol joined");
    const people = [alice, bob, carol];
    const names = ["alice", "bob", "carol"];
    const N = 50;
    // All three talk at once, each line its own write.
    await Promise.all(people.map(async (c, i) => {
      for (let j = 0; j < N; j++) await c.send(`line ${j} from ${names[i]}\n`);
    }));
    for (const [i, c] of people.entries()) {
      const got = new Map(names.filter((_, k) => k !== i).map((n) => [n, [] as string[]]));
      for (let k = 0; k < 2 * N; k++) {
        const m = (await c.line())!.match(/^(\w+): (.*)$/)!;
        got.get(m[1])!.push(m[2]);
      }
      for (const [from, lines] of got) {
        assert.deepEqual(lines, Array.from({ length: N }, (_, j) => `line ${j} from ${from}`));
      }
    }
    carol.close();
    assert.equal(await alice.line(), "* carol left");
    assert.equal(await bob.line(), "* carol left");
  }));

Deno.test("chat: a line's bytes pass exactly (invalid UTF-8, escapes); the log escapes them", () =>
  withRoom([], async (server, join) => {
    const alice = await join("alice");
    const bob = await join("bob");
    await alice.send(new Uint8Array([0xff, 0xfe, 0x1b, 0x5b, 0x32, 0x4a, 0x41, 0x0d, 0x0a]));
    const line = await bob.rawLine();
    assert.deepEqual(
      [...line!],
      [...encoder.encode("alice: "), 0xff, 0xfe, 0x1b, 0x5b, 0x32, 0x4a, 0x41],
    );
    await server.stdout.waitFor("alice: \\xff\\xfe\\x1b[2JA\n");
  }));

Deno.test("chat: taken and invalid names get ERR and are asked again", () =>
  withRoom([], async (server, join) => {
    const alice = await join("alice");
    const c = await LineClient.connect(server.port);
    try {
      assert.equal(await c.line(), "* name?");
      const bad = "ERR a name is 1 to 32 bytes of UTF-8, no spaces or control characters";
      for (const name of ["alice", "ev\x1bil", "", "two words", "x".repeat(33), "\u202eevil"]) {
        const want = name === "alice" ? "ERR the name alice is taken" : bad;
        assert.equal(await c.ask(name), want, JSON.stringify(name));
        assert.equal(await c.line(), "* name?");
      }
      await c.send(new Uint8Array([0xc3, 0x28, 0x0a])); // not UTF-8
      assert.equal(await c.line(), bad);
      assert.equal(await c.line(), "* name?");
      assert.equal(await c.ask("zoë"), "* welcome zoë; here: alice");
      assert.equal(await alice.line(), "* zoë joined");
      await server.stdout.waitFor(/name refused: ev\\x1bil\n/);
    } finally {
      c.close();
    }
  }));

Deno.test("chat: a client that never reads is dropped; the others' lines keep coming within 2 s", () =>
  withRoom(["--quiet", "--max-queue", "65536"], async (server, join) => {
    const alice = await join("alice");
    const bob = await join("bob");
    assert.equal(await alice.line(), "* bob joined");
    // `slow` names itself and then never reads: the kernel's buffers fill (some
    // MB on loopback), then its queue on the server.
    const slow = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      await slow.write(encoder.encode("slow\n"));
      assert.equal(await alice.line(), "* slow joined");
      assert.equal(await bob.line(), "* slow joined");
      // Rounds of 20 lines (20 KB): bob's queue never holds more than that, so
      // only slow, whose queue grows by a round each time, overflows.
      const filler = "f".repeat(1000);
      const round = `${filler}\n`.repeat(20);
      const dropped = /slow: \d+ bytes not taken, too slow, dropped/;
      let rounds = 0;
      let worstMs = 0;
      for (; rounds < 2000 && !dropped.test(server.stdout.text); rounds++) {
        const t0 = performance.now();
        await alice.send(round + `mark ${rounds}\n`);
        const before = await until(bob, `alice: mark ${rounds}`);
        const ms = performance.now() - t0;
        worstMs = Math.max(worstMs, ms);
        assert.ok(ms < 2000, `round ${rounds}: bob waited ${ms.toFixed(0)} ms for 20 lines`);
        assert.equal(before.filter((l) => l !== "* slow left").length, 20);
        assert.ok(before.every((l) => l === `alice: ${filler}` || l === "* slow left"));
      }
      assert.ok(rounds < 2000, "slow was never dropped");
      // The room goes on: bob hears that slow left (if not already), and alice's next line.
      await alice.send("after\n");
      const rest = await until(bob, "alice: after", 10);
      assert.ok(rest.every((l) => l === "* slow left"), `${rest}`);
      // slow is hung up on: it can still read what the kernel holds, then its ERR line, then the end.
      const got = await readToEnd(slow);
      const tail = decoder.decode(got.subarray(Math.max(0, got.length - 200)));
      assert.ok(got.length > 1_000_000, `slow had ${got.length} bytes waiting`);
      assert.ok(tail.endsWith("\nERR too slow, disconnected\n"), `slow's last bytes: ${tail}`);
      console.log(
        `slow dropped after ${rounds} rounds, ${got.length} bytes left to read; ` +
          `bob's worst round ${worstMs.toFixed(0)} ms`,
      );
    } finally {
      slow.close();
    }
  }));

/** Everything left to read on `conn` until the peer closes (or resets) it. */
async function readToEnd(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(1 << 16);
  const deadline = Date.now() + WAIT_MS;
  try {
    while (Date.now() < deadline) {
      const n = await withTimeout(conn.read(buf), deadline - Date.now(), "readToEnd");
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.ConnectionReset)) throw err;
  }
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

Deno.test({
  name: "chat_server: one client flooding the room does not keep a newcomer waiting",
  ignore: !hasCommand("nc") || !hasCommand("timeout"),
  async fn() {
    const server = await startServer("chat_server", ["--port", "0", "--quiet"]);
    const dir = await Deno.makeTempDir();
    try {
      // nc streams a file as fast as the server reads it, from its own process.
      await Deno.writeFile(`${dir}/flood`, encoder.encode(("f".repeat(99) + "\n").repeat(500_000)));
      const flooder = sh(
        `(printf 'flooder\\n'; cat ${dir}/flood ${dir}/flood ${dir}/flood) | ` +
          `timeout 4 nc -N 127.0.0.1 ${server.port} > /dev/null`,
        20_000,
      );
      await new Promise((r) => setTimeout(r, 300)); // the flood is under way
      let worst = 0;
      for (let i = 0; i < 8; i++) {
        const t0 = performance.now();
        const c = await LineClient.connect(server.port);
        assert.equal(await c.line(), "* name?");
        worst = Math.max(worst, performance.now() - t0);
        c.close();
        await new Promise((r) => setTimeout(r, 100));
      }
      await flooder;
      console.log(`worst wait for '* name?' during the flood: ${worst.toFixed(1)} ms`);
      assert.ok(worst < 1000, `a newcomer waited ${worst.toFixed(0)} ms`);
    } finally {
      await Deno.remove(dir, { recursive: true });
      const done = await server.stop();
      assert.equal(done.code, 0, done.stderr);
    }
  },
});

Deno.test("chat: clients resetting or leaving mid-line harm nobody", () =>
  withRoom(["--quiet"], async (server, join) => {
    const alice = await join("alice");
    const bob = await join("bob");
    assert.equal(await alice.line(), "* bob joined");
    for (let i = 0; i < 20; i++) {
      const rude = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await rude.write(encoder.encode(`rude${i}\nhalf a li`));
      assert.equal(await bob.line(), `* rude${i} joined`);
      await rude.read(new Uint8Array(1)); // the prompt came; the rest of it stays unread,
      rude.close(); // so this close is a reset (RST), not a FIN
      assert.equal(await bob.line(), `* rude${i} left`); // and its half line went nowhere
      assert.equal(await alice.line(), `* rude${i} joined`);
      assert.equal(await alice.line(), `* rude${i} left`);
      await alice.send(`still here ${i}\n`);
      assert.equal(await bob.line(), `alice: still here ${i}`);
    }
    // A client that half-closes mid-line: its unfinished line goes to nobody either.
    const early = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await early.write(encoder.encode("early\nunfinished"));
    await early.closeWrite();
    assert.equal(await bob.line(), "* early joined");
    assert.equal(await bob.line(), "* early left");
    early.close();
  }));

Deno.test("chat: a line longer than --max-line gets ERR line too long; the room carries on", () =>
  withRoom(["--max-line", "64"], async (server, join) => {
    const alice = await join("alice");
    const bob = await join("bob");
    assert.equal(await alice.line(), "* bob joined");
    await bob.send("short\n" + "x".repeat(100) + "\n");
    assert.equal(await alice.line(), "bob: short");
    assert.equal(await bob.line(), "ERR line too long");
    assert.equal(await bob.line(), null);
    assert.equal(await alice.line(), "* bob left");
    // Before a name, too: an endless first line.
    const flood = await floodAndRead(server.port, new Uint8Array(100_000).fill(0x61));
    assert.equal(decoder.decode(flood), "* name?\nERR line too long\n");
    await server.stdout.waitFor(/line longer than 64 bytes, disconnected/);
  }));

Deno.test("chat: --idle-timeout drops a client that neither sends a line nor reads", () =>
  withRoom(["--idle-timeout", "0.3"], async (server, join) => {
    const lurker = await join("lurker");
    assert.equal(await lurker.line(), null);
    await server.stdout.waitFor(/idle for 0\.3 s, disconnected/);
    await server.stdout.waitFor("lurker left");
  }));

Deno.test("chat: --max-conns turns away extra clients with ERR server busy", () =>
  withRoom(["--max-conns", "2"], async (server, join) => {
    await join("a");
    await join("b");
    const c = await LineClient.connect(server.port);
    assert.equal(await c.line(), "ERR server busy");
    assert.equal(await c.line(), null);
    c.close();
  }));

Deno.test("chat: SIGTERM with clients connected exits 0 within 2 s", () =>
  // A queue big enough that `deaf` is not dropped: it is still owed megabytes at the end.
  withRoom(["--quiet", "--max-queue", String(64 << 20)], async (server, join) => {
    const [a, b, c] = [await join("a"), await join("b"), await join("c")];
    // One that never reads, and one that never names itself.
    const deaf = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const shy = await LineClient.connect(server.port);
    try {
      await deaf.write(encoder.encode("deaf\n"));
      assert.deepEqual(await until(a, "* deaf joined"), ["* b joined", "* c joined"]);
      assert.deepEqual(await until(b, "* deaf joined"), ["* c joined"]);
      assert.deepEqual(await until(c, "* deaf joined"), []);
      for (let i = 0; i < 60; i++) { // 6 MB, more than the kernel holds for deaf
        await a.send(`${"z".repeat(1000)}\n`.repeat(99) + `mark ${i}\n`);
        await until(b, `a: mark ${i}`, 200);
        await until(c, `a: mark ${i}`, 200);
      }
      a.close(); // the rest is about the other clients
      assert.equal(await b.line(), "* a left");
      assert.equal(await c.line(), "* a left");
      const t0 = performance.now();
      const done = await server.stop();
      const ms = performance.now() - t0;
      assert.equal(done.code, 0, done.stderr);
      assert.ok(ms < 2000, `took ${ms} ms`);
      assert.match(done.stdout, /chat_server: shut down, and closed the 4 clients still connected/);
      for (const reader of [b, c]) {
        assert.equal(await reader.line(), "* server closing");
        assert.equal(await reader.line(), null);
      }
      assert.equal(await shy.line(), "* name?");
      assert.equal(await shy.line(), null);
    } finally {
      deaf.close();
      shy.close();
    }
  }));

Deno.test("chat: bad flags exit 2 with one error line; --help shows the maxima", async () => {
  for (const bad of [["--max-queue", "100"], ["--max-queue", "999999999"], ["--port", "x"]]) {
    const r = await runTask("chat_server", bad);
    assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
    assert.match(r.stderr, /^error: [^\n]*\n$/, `${bad}`);
  }
  const help = await runTask("chat_server", ["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--max-queue N .*default 262144, max 67108864/);
  assert.match(help.stdout, /--max-line N .*default 1024/);
});

/** chat_client as a process with a pipe for its standard input. */
function chatClient(port: number, ...extra: string[]) {
  const client = new Running(
    [...taskCommand("chat_client"), "--port", String(port), ...extra],
    "piped",
  );
  const stdin = client.child.stdin.getWriter();
  return {
    client,
    type: (text: string) => stdin.write(encoder.encode(text)),
    end: () => stdin.close(),
  };
}

Deno.test("chat_client: types and prints at once; control bytes from the room are escaped", () =>
  withRoom([], async (server, join) => {
    const bob = await join("bob");
    const { client, type, end } = chatClient(server.port);
    try {
      await type("alice\n"); // no --name: the first line is the name
      await client.stdout.waitFor("* welcome alice; here: bob\n");
      assert.equal(await bob.line(), "* alice joined");
      await type("hello bob\n");
      assert.equal(await bob.line(), "alice: hello bob");
      // The room talks while alice's input stays open: it prints at once.
      await bob.send("hi alice \x1b[2J\x07\r\n");
      await client.stdout.waitFor("bob: hi alice \\x1b[2J\\x07\n");
      await end(); // Ctrl+D: alice leaves, the server closes, the client exits 0
      const done = await client.finished();
      assert.equal(done.code, 0, done.stderr);
      assert.equal(
        done.stdout,
        "* name?\n* welcome alice; here: bob\nbob: hi alice \\x1b[2J\\x07\n",
      );
      assert.match(done.stderr, /sent 2 line\(s\), received 3 line\(s\)/);
      assert.equal(await bob.line(), "* alice left");
    } finally {
      client.kill("SIGKILL");
      await client.finished();
    }
  }));

Deno.test("chat_client: --name; when the server goes, it says so and exits 1", () =>
  withRoom([], async (server) => {
    const { client, end } = chatClient(server.port, "--name", "carol");
    try {
      await client.stdout.waitFor("* welcome carol; nobody else is here\n");
      assert.equal((await server.stop()).code, 0);
      const done = await client.finished();
      assert.equal(done.code, 1);
      assert.match(done.stdout, /\* server closing\n$/);
      assert.match(done.stderr, /^error: the server closed the connection$/m);
    } finally {
      await end().catch(() => {});
      client.kill("SIGKILL");
      await client.finished();
    }
  }));

Deno.test("chat_client: Ctrl+C leaves at once (exit 0); an endless input line is an error", () =>
  withRoom([], async (server, join) => {
    const bob = await join("bob");
    const first = chatClient(server.port, "--name", "dave");
    try {
      await first.client.stdout.waitFor("* welcome dave; here: bob\n");
      first.client.kill("SIGINT");
      const done = await first.client.finished();
      assert.equal(done.code, 0, done.stderr);
      assert.match(done.stderr, /sent 0 line\(s\), received 2 line\(s\)/);
      assert.deepEqual(await until(bob, "* dave left"), ["* dave joined"]);
    } finally {
      await first.end().catch(() => {});
      first.client.kill("SIGKILL");
      await first.client.finished();
    }
    const r = await runTask("chat_client", [
      "--port",
      String(server.port),
      "--name",
      "eve",
    ], "x".repeat(70_000) + "\n");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: an input line is longer than 65536 bytes$/m);
  }));

Deno.test("chat_client: a refused connection is one error line and exit 1", async () => {
  const r = await runTask("chat_client", ["--port", "1", "--attempts", "1", "--name", "x"]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^error: connection refused by 127\.0\.0\.1:1 after 1 attempt: is the server running\? start it with deno task chat_server --port 1$/m,
  );
});

/**
 * A fake chat server for one chat_client: asks `* name?`, reads the name
 * line, sends `then`, and closes. Resolves with the name line it got.
 */
function fakeRoom(then: Uint8Array) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    listener.close();
    try {
      await conn.write(encoder.encode("* name?\n"));
      let got = "";
      const buf = new Uint8Array(256);
      while (!got.includes("\n")) {
        const n = await withTimeout(conn.read(buf), WAIT_MS, "the name line");
        if (n === null) break;
        got += decoder.decode(buf.subarray(0, n));
      }
      let at = 0;
      while (at < then.length) at += await conn.write(then.subarray(at));
      return got;
    } finally {
      conn.close();
    }
  })();
  return { port: listener.addr.port, done };
}

Deno.test("chat_client: a line the server cut off is an error line, escaped, not a line of the room", async () => {
  // The second line has no newline: the server closed in the middle of it.
  const room = fakeRoom(encoder.encode("bob: hi\nbob: cut\x1b[2J-of"));
  const r = await runTask("chat_client", ["--port", String(room.port), "--name", "alice"]);
  assert.equal(await room.done, "alice\n");
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, "* name?\nbob: hi\n"); // never `bob: cut-of` as if it were whole
  assert.match(r.stderr, /sent 0 line\(s\), received 2 line\(s\)\n/);
  assert.match(
    r.stderr,
    /\nerror: the server closed the connection in the middle of a line: 'bob: cut\\x1b\[2J-of' was cut off \(no newline\)\n$/,
  );
  assert.ok(!(r.stdout + r.stderr).includes("\x1b"), "a raw ESC reached the terminal");
});

Deno.test("chat_client: a --name with a line break is a usage error; nothing is sent", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let connected = false;
  const accepting = listener.accept().then((c) => {
    connected = true;
    c.close();
  }, () => {});
  try {
    for (const [name, shown] of [["a\nb", "a\\nb"], ["a\rb", "a\\rb"], ["a\r\n", "a\\r\\n"]]) {
      const r = await runTask("chat_client", [
        "--port",
        String(listener.addr.port),
        "--name",
        name,
      ]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stdout, "");
      assert.equal(
        r.stderr,
        `error: --name must be one line: '${shown}' holds a line break (see chat_client --help)\n`,
      );
    }
  } finally {
    listener.close();
    await accepting;
  }
  assert.equal(connected, false);
});

Deno.test({
  name: "chat: nc joins and talks like any client",
  ignore: !hasCommand("nc"),
  fn: () =>
    withRoom([], async (server, join) => {
      const bob = await join("bob");
      const r = await sh(`printf 'carol\\nhi from nc\\n' | nc -N 127.0.0.1 ${server.port}`);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(decoder.decode(r.stdout), "* name?\n* welcome carol; here: bob\n");
      assert.equal(await bob.line(), "* carol joined");
      assert.equal(await bob.line(), "carol: hi from nc");
      assert.equal(await bob.line(), "* carol left");
    }),
});
