/**
 * How every client connects, as real processes against real listeners: each
 * connect attempt is bounded by the client's `--timeout`, even against a
 * server whose backlog is full (the kernel drops the SYN, so nothing ever
 * answers: no refusal, no accept), and the error says what timed out; and
 * every client writes its attempt lines to stderr, so that stdout keeps only
 * its results.
 *
 * @module
 */
import assert from "node:assert/strict";
import { freePort, hasCommand, runTask, withTimeout } from "./helpers.ts";

const HAS_PYTHON = hasCommand("python3");

/**
 * A Python listener with `listen(0)` that never accepts, filled with
 * connections until a probe's connect goes unanswered: its backlog is full.
 * It prints its port once full, and stays until its stdin closes.
 */
const FULL_BACKLOG = `
import socket, sys, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(0)
port = listener.getsockname()[1]
held = []
for _ in range(20):
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
    except socket.timeout:
        print(port, flush=True)  # a connect that gets no answer: the backlog is full
        break
    held.append(probe)  # completed, and queued for an accept() that never comes
else:
    print("never full", flush=True)
sys.stdin.read()
`;

/** Runs `use(port)` while a listener on `port` has a full backlog. */
async function withFullBacklog(use: (port: number) => Promise<void>): Promise<void> {
  const child = new Deno.Command("python3", {
    args: ["-c", FULL_BACKLOG],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    const first = await withTimeout(lines.read(), 10_000, "the full-backlog listener");
    const port = Number(first.value);
    assert.ok(port > 0, `the listener's backlog did not fill: ${first.value}`);
    await use(port);
  } finally {
    await child.stdin.close();
    await lines.cancel();
    await child.status;
  }
}

/** Every client, with the flags that make it connect once to `port` and give up after 2 attempts where it has --attempts. */
const CLIENTS: Record<string, (port: string) => string[]> = {
  hello_client: (p) => ["-p", p, "--timeout", "1"], // 3 attempts, fixed
  basic_client: (p) => ["-p", p, "--timeout", "1"], // 1 attempt, as the seed
  socket_client: (p) => ["-p", p, "--timeout", "1", "--attempts", "2", "-m", "x"],
  tcp_client: (p) => ["--host", "127.0.0.1", "-p", p, "--timeout", "1", "--attempts", "2"],
  chat_client: (p) => ["-p", p, "--timeout", "1", "--attempts", "2", "--name", "x"],
  sensor_client: (p) => ["-p", p, "--timeout", "1", "--count", "1"], // 3 attempts, fixed
  bind_socket: (p) => ["--host", "127.0.0.1", "-p", p, "--timeout", "1"], // 1 attempt
};

/** How many attempts each client makes with the flags above. */
const ATTEMPTS: Record<string, number> = {
  hello_client: 3,
  socket_client: 2,
  tcp_client: 2,
  chat_client: 2,
  sensor_client: 3,
};

Deno.test({
  name: "every client gives up on a full backlog within its --timeout per attempt, and says so",
  ignore: !HAS_PYTHON,
  async fn() {
    await withFullBacklog(async (port) => {
      const p = String(port);
      const target = `127\\.0\\.0\\.1:${port}`;
      // Before the fix: 10 s per attempt whatever --timeout said (hello_client: 30.5 s),
      // so each of these was still waiting when runTask killed it at 8 s.
      const results = await Promise.all(
        Object.entries(CLIENTS).map(async ([name, args]) => {
          const r = await runTask(name, args(p), undefined, 8000);
          return [name, r] as const;
        }),
      );
      for (const [name, r] of results) {
        const label = `${name}: ${r.stdout}${r.stderr}`;
        assert.equal(r.signal, null, `${name} was still waiting after 8 s: ${label}`);
        assert.equal(r.code, 1, label);
        // 1 s per attempt plus the backoff (~0.2 s, then ~0.4 s), and Deno's start.
        assert.ok(r.ms < 6000, `${name} took ${r.ms.toFixed(0)} ms: ${label}`);
        const attempts = ATTEMPTS[name];
        if (attempts !== undefined) {
          for (let i = 1; i < attempts; i++) {
            assert.match(
              r.stderr,
              new RegExp(
                `^attempt ${i}/${attempts} failed: no answer from ${target} within 1 s ` +
                  `\\(--timeout\\); retrying in \\d+ ms$`,
                "m",
              ),
              label,
            );
          }
          assert.match(
            r.stderr,
            new RegExp(
              `\\nerror: could not connect to ${target} after ${attempts} attempts: ` +
                `no answer within 1 s \\(--timeout\\)\\n$`,
            ),
            label,
          );
        }
        assert.doesNotMatch(r.stdout, /attempt|error/, label);
      }
      const [basic, bind] = ["basic_client", "bind_socket"].map((name) =>
        results.find(([n]) => n === name)![1]
      );
      assert.equal(
        basic.stderr,
        `error: could not connect to 127.0.0.1:${port}: no answer within 1 s (--timeout)\n`,
      );
      assert.equal(
        bind.stderr,
        `error: cannot connect to 127.0.0.1 (127.0.0.1) port ${port}: ` +
          "no answer within 1 s (--timeout)\n",
      );
    });
  },
});

Deno.test("every client's --help says that --timeout bounds each connect attempt", async () => {
  await Promise.all(
    Object.keys(CLIENTS).map(async (name) => {
      const r = await runTask(name, ["--help"]);
      assert.equal(r.code, 0, r.stderr);
      const line = r.stdout.split("\n").find((l) => l.includes("--timeout SECONDS")) ?? "";
      assert.match(line, /each connect attempt|the connect/, `${name}: ${line}`);
      assert.match(line, /\(0: never\) \(default 10, max 86400\)$/, `${name}: ${line}`);
    }),
  );
});

Deno.test("every client that retries prints its attempt lines on stderr, never stdout", async () => {
  const port = String(freePort()); // nothing listens: every attempt is refused
  const refused: [string, string[], number][] = [
    ["tcp_client", ["--host", "127.0.0.1", "-p", port, "--attempts", "2"], 2],
    ["socket_client", ["-p", port, "--attempts", "2", "-m", "x"], 2],
    ["chat_client", ["-p", port, "--attempts", "2", "--name", "x"], 2],
    ["hello_client", ["-p", port], 3],
    ["sensor_client", ["-p", port, "--count", "1"], 3],
  ];
  await Promise.all(refused.map(async ([name, args, attempts]) => {
    const r = await runTask(name, args);
    const label = `${name}: stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`;
    assert.equal(r.code, 1, label);
    assert.doesNotMatch(r.stdout, /attempt/, label);
    const lines = r.stderr.split("\n").filter((l) => l.startsWith("attempt "));
    assert.equal(lines.length, attempts, label);
    assert.match(lines[0], new RegExp(`^attempt 1/${attempts} failed: Connection refused`));
    assert.match(r.stderr, /\nerror: connection refused by 127\.0\.0\.1:\d+ after/, label);
  }));
});
