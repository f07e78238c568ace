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
      for (const name of ["alice", "ev\x1bil", "", "two words", "x".repeat(17), "9lives", "-x"]) {
        const want = name === "alice" ? "ERR the name alice is taken" : BAD_NAME;
        assert.equal(await c.ask(name), want, JSON.stringify(name));
        assert.equal(await c.line(), "* name?");
      }
      await c.send(new Uint8Array([0xc3, 0x28, 0x0a])); // not UTF-8
      assert.equal(await c.line(), BAD_NAME);
      assert.equal(await c.line(), "* name?");
      const longest = "Z" + "o_-9".repeat(3) + "xyz"; // 16 characters
      assert.equal(await c.ask(longest), `* welcome ${longest}; here: alice`);
      assert.equal(await alice.line(), `* ${longest} joined`);
      await server.stdout.waitFor(/name refused: ev\\x1bil\n/);
    } finally {
      c.close();
    }
  }));

/** What a refused name gets: the rule. */
const BAD_NAME = "ERR a name is 1 to 16 ASCII letters, digits, _ or -, starting with a letter";

Deno.test("chat: look-alike and blank names are refused while alice is in; ALICE is taken", () =>
  withRoom([], async (server, join) => {
    const alice = await join("alice");
    const c = await LineClient.connect(server.port);
    try {
      assert.equal(await c.line(), "* name?");
      const tries: [string, string][] = [
        ["\u0430lice", BAD_NAME], // Cyrillic а
        ["\uff41lice", BAD_NAME], // fullwidth ａ
        ["alice\u0301", BAD_NAME], // a combining accent on the e
        ["ALICE", "ERR the name ALICE is taken: alice is here, and case does not count"],
        ["\u3164\u3164", BAD_NAME], // two Hangul fillers: renders blank
        ["\u2800", BAD_NAME], // a blank Braille pattern
      ];
      for (const [name, want] of tries) {
        await c.send(concat(encoder.encode(name), encoder.encode("\n"))); // raw UTF-8 bytes
        assert.equal(await c.line(), want, JSON.stringify(name));
        assert.equal(await c.line(), "* name?");
      }
      // Not one of them joined; a name of the rule does, shown as typed.
      assert.equal(await c.ask("Alice_2"), "* welcome Alice_2; here: alice");
      assert.equal(await alice.line(), "* Alice_2 joined");
      await alice.send("hi\n");
      assert.equal(await c.line(), "alice: hi");
    } finally {
      c.close();
    }
  }));

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

Deno.test("chat: a client that never reads is dropped; the others' lines keep coming within 2 s", () =>
  // --max-rate 0: alice sends megabytes to fill slow's buffers, far past a person's rate.
  withRoom(["--quiet", "--max-queue", "65536", "--max-rate", "0"], async (server, join) => {
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
    // --max-rate 0: the flood runs to its end (the rate limit would cut it at once).
    const server = await startServer("chat_server", ["--port", "0", "--quiet", "--max-rate", "0"]);
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

Deno.test("chat: sockets that never give a name are let go after --name-timeout; a chat_client then gets in", () =>
  withRoom(["--max-conns", "3", "--name-timeout", "1"], async (server) => {
    // Three sockets take every place and never send a byte.
    const silent = await Promise.all([1, 2, 3].map(() => LineClient.connect(server.port)));
    const t0 = performance.now();
    try {
      for (const c of silent) assert.equal(await c.line(), "* name?");
      // While they hold the room, everyone else is turned away...
      const turnedAway = await LineClient.connect(server.port);
      assert.equal(await turnedAway.line(), "ERR server busy");
      turnedAway.close();
      // ...until each of them is told why and closed, a second after it came.
      for (const c of silent) {
        assert.equal(await c.line(), "ERR no name within 1 s, disconnected");
        assert.equal(await c.line(), null);
        c.close();
      }
      const ms = performance.now() - t0;
      assert.ok(ms >= 900 && ms < 3000, `dropped after ${ms.toFixed(0)} ms`);
      await server.stdout.waitForCount(/: no name within 1 s, disconnected\n/, 3);
      // The room is open again: a real chat_client joins and talks.
      const r = await runTask(
        "chat_client",
        ["--port", String(server.port), "--name", "legit"],
        "hi\n",
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "* name?\n* welcome legit; nobody else is here\n");
      await server.stdout.waitFor("legit: hi\n");
      assert.equal(server.stdout.text.match(/no name within/g)?.length, 3, server.stdout.text);
    } finally {
      for (const c of silent) c.close();
    }
  }));

/** Runs `python3 -c code args...`; resolves with its stdout bytes, stderr and exit code. */
function py(code: string, args: string[], timeoutMs = 60_000) {
  const child = new Deno.Command("python3", {
    args: ["-c", code, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, timeoutMs);
  return child.output().then((out) => {
    clearTimeout(timer);
    return { code: out.code, stdout: out.stdout, stderr: decoder.decode(out.stderr) };
  });
}

/**
 * A flooder: joins as `flooder`, sends COUNT numbered lines of 100 bytes
 * (`00000042 xxx...`) as fast as it can, half-closes, and prints everything
 * the room sent it (`<reset>` if the connection was reset). Args: PORT COUNT.
 */
const FLOODER = `
import socket, sys, threading
port, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"flooder\\n")
got = bytearray()
def read():
    try:
        while True:
            b = s.recv(65536)
            if not b: return
            got.extend(b)
    except OSError:
        got.extend(b"<reset>")
reader = threading.Thread(target=read, daemon=True)
reader.start()
try:
    for i in range(0, count, 1000):
        s.sendall(b"".join(b"%08d %s\\n" % (j, b"x" * 90) for j in range(i, min(count, i + 1000))))
    s.shutdown(socket.SHUT_WR)
except OSError:
    pass
reader.join(30)
sys.stdout.buffer.write(got)
`;

/**
 * A slow reader: joins as NAME, then reads 16 KiB and sleeps 0.1 s (some
 * 150 KB/s) for PACED seconds, then as fast as it can; prints all it got,
 * then `<reset>` if the connection was reset. Args: PORT NAME PACED.
 */
const SLOW_READER = `
import socket, sys, time
port, name, paced = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(name.encode() + b"\\n")
t0 = time.monotonic()
data = bytearray()
try:
    while time.monotonic() - t0 < 60:
        b = s.recv(16384)
        if not b: break
        data += b
        if time.monotonic() - t0 < paced: time.sleep(0.1)
except ConnectionResetError:
    data += b"<reset>"
sys.stdout.buffer.write(data)
`;

/** The flooder's line number N as the room shows it. */
const floodLine = (n: number) => `flooder: ${String(n).padStart(8, "0")} ${"x".repeat(90)}`;

Deno.test({
  name:
    "chat: a reader taking ~150 KB/s when dropped gets whole lines, then ERR too slow, then the close; a sleeper is dropped too",
  ignore: !hasCommand("python3"),
  fn: () =>
    // --max-rate 0: one flooder may outrun the readers, the case this rule is for.
    withRoom(["--quiet", "--max-rate", "0"], async (server, join) => {
      const watcher = await join("watcher");
      const slow = py(SLOW_READER, [String(server.port), "slow", "12"]);
      assert.equal(await watcher.line(), "* slow joined");
      const sleeper = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      try {
        await sleeper.write(encoder.encode("sleeper\n")); // and never reads
        assert.equal(await watcher.line(), "* sleeper joined");
        watcher.close(); // the flood is for slow and sleeper
        const flood = await py(FLOODER, [String(server.port), "200000"]); // 20 MB
        assert.equal(flood.code, 0, flood.stderr);
        await server.stdout.waitFor(/sleeper: \d+ bytes not taken, too slow, dropped/);
        await server.stdout.waitFor(/slow: \d+ bytes not taken, too slow, dropped/);
        const got = await slow;
        assert.equal(got.code, 0, got.stderr);
        const text = decoder.decode(got.stdout);
        // Whole lines, the flood's in order with none missing, then the ERR, then the end.
        assert.ok(
          text.endsWith("\nERR too slow, disconnected\n"),
          `slow's end: ${text.slice(-300)}`,
        );
        const lines = text.split("\n").slice(0, -2);
        const flooded = lines.filter((l) => l.startsWith("flooder: "));
        assert.ok(flooded.length > 10_000, `slow got ${flooded.length} lines`);
        for (const [i, line] of flooded.entries()) {
          if (line !== floodLine(i)) assert.fail(`line ${i} of the flood: '${line.slice(0, 120)}'`);
        }
        const notices = lines.filter((l) => !l.startsWith("flooder: "));
        // (The watcher's leave and the flooder's join may come in either order.)
        assert.deepEqual(notices.filter((l) => l !== "* sleeper left").sort(), [
          "* flooder joined",
          "* name?",
          "* sleeper joined",
          "* watcher left",
          "* welcome slow; here: watcher",
        ]);
        console.log(
          `slow took ${got.stdout.length} bytes: ${flooded.length} whole lines, then its ERR`,
        );
      } finally {
        sleeper.close();
      }
    }),
});

Deno.test("chat: SIGTERM with clients connected exits 0 within 2 s", () =>
  // A queue big enough that `deaf` is not dropped: it is still owed megabytes at the end.
  withRoom(
    ["--quiet", "--max-queue", String(64 << 20), "--max-rate", "0"],
    async (server, join) => {
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
        assert.match(
          done.stdout,
          /chat_server: shut down, and closed the 4 clients still connected/,
        );
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
    },
  ));

Deno.test("chat: bad flags exit 2 with one error line; --help shows the maxima", async () => {
  for (
    const bad of [
      ["--max-queue", "100"],
      ["--max-queue", "999999999"],
      ["--port", "x"],
      ["--name-timeout", "-1"],
      ["--name-timeout", "100000"],
      ["--max-rate", "1.5"],
      ["--max-rate", String(2 ** 31)],
    ]
  ) {
    const r = await runTask("chat_server", bad);
    assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
    assert.match(r.stderr, /^error: [^\n]*\n$/, `${bad}`);
  }
  const help = await runTask("chat_server", ["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--max-queue N .*default 262144, max 67108864/);
  assert.match(help.stdout, /--max-line N .*default 1024/);
  assert.match(help.stdout, /--idle-timeout SECONDS .*default 600, max 86400/);
  assert.match(help.stdout, /--name-timeout SECONDS .*default 30, max 86400/);
  assert.match(help.stdout, /--max-rate BYTES_PER_S .*default 32768, max 1073741824/);
  assert.match(help.stdout, /1 to 16 ASCII letters, digits, _ or -, starting with a letter/);
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

Deno.test({
  name:
    "chat: a flooder is cut with ERR flooding; chat_client readers stay in and got every line up to the cut",
  ignore: !hasCommand("python3"),
  fn: () =>
    withRoom([], async (server) => { // the default --max-rate
      const names = ["carol", "dave", "erin"];
      const readers: ReturnType<typeof chatClient>[] = [];
      try {
        for (const name of names) { // one after the other: each is in when the next comes
          readers.push(chatClient(server.port, "--name", name));
          await readers.at(-1)!.client.stdout.waitFor(`* welcome ${name}; `);
        }
        const flood = await py(FLOODER, [String(server.port), "200000"]); // 20 MB, as fast as it goes
        assert.equal(flood.code, 0, flood.stderr);
        const told = decoder.decode(flood.stdout).replace(/<reset>$/, "");
        assert.ok(told.endsWith("\nERR flooding, disconnected\n"), `the flooder's end: ${told}`);
        await server.stdout.waitFor(
          /flooder: over --max-rate 32768 bytes\/s, flooding, disconnected\n/,
        );
        // Each reader got the same lines, whole and in order, up to the cut; then the leave.
        const counts = [];
        for (const { client } of readers) {
          await client.stdout.waitFor("* flooder left\n");
          const shown = client.stdout.text.split("\n");
          const from = shown.indexOf("* flooder joined") + 1;
          const flooded = shown.slice(from, shown.indexOf("* flooder left"));
          for (const [i, line] of flooded.entries()) {
            if (line !== floodLine(i)) {
              assert.fail(`line ${i} of the flood: '${line.slice(0, 120)}'`);
            }
          }
          counts.push(flooded.length);
        }
        assert.ok(counts[0] > 500, `only ${counts[0]} lines before the cut`); // 64 KiB of burst
        assert.deepEqual(counts, [counts[0], counts[0], counts[0]]);
        // They are still in: carol talks, the others hear her; then all leave cleanly.
        await readers[0].type("still here\n");
        for (const { client } of readers.slice(1)) {
          await client.stdout.waitFor("carol: still here\n");
        }
        for (const r of readers) await r.end();
        for (const { client } of readers) {
          const done = await client.finished();
          assert.equal(done.code, 0, done.stderr);
          assert.doesNotMatch(done.stdout + done.stderr, /ERR|error:/);
        }
        assert.equal(server.stdout.text.match(/flooding/g)?.length, 1, "logged once");
        console.log(`the flooder was cut after ${counts[0]} lines`);
      } finally {
        for (const { client, end } of readers) {
          await end().catch(() => {});
          client.kill("SIGKILL");
          await client.finished();
        }
      }
    }),
});

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
