/**
 * End-to-end: `deno task chat_client` on a real pseudo-terminal, against a
 * real chat_server, while another client talks in the room. Python's `pty`
 * plumbing stands in for the terminal: it runs the client with a pty as its
 * standard input, output and error (and controlling terminal), passes what
 * the test types to it, passes back every byte the terminal would show, and
 * says at the end whether the terminal was ever in raw mode and whether its
 * mode is back to what it was. `render` then plays those bytes on a tiny
 * screen, so the tests check what a person would see.
 */
import assert from "node:assert/strict";
import {
  encoder,
  hasCommand,
  LineClient,
  Output,
  ROOT,
  type Server,
  startServer,
  WAIT_MS,
  withTimeout,
} from "./helpers.ts";

// Python's pty module needs a Unix; where it or python3 is missing, the pty tests are skipped.
const HAS_PYTHON = Deno.build.os !== "windows" && hasCommand("python3");
if (!HAS_PYTHON) {
  console.warn(
    "chat_client_test: python3 (with its pty module) is missing: the pty tests are skipped",
  );
}

/**
 * The terminal: runs argv[1:] on a new pty (80x24) as its controlling
 * terminal; copies its stdin to the pty and the pty to its stdout; once the
 * program ended and the pty is quiet, prints on stderr a JSON line: the exit
 * code, whether the pty was ever out of canonical (cooked) mode, and whether
 * its mode is now exactly what it was before. Bounded: 30 s, then the
 * program is killed; SIGTERM kills it too.
 */
const PTY_BRIDGE = `
import fcntl, json, os, select, signal, struct, subprocess, sys, termios, time
master, slave = os.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
before = termios.tcgetattr(slave)
def controlling_terminal():
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
child = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=slave, stderr=slave,
                         start_new_session=True, preexec_fn=controlling_terminal)
def kill(*_):
    os.killpg(child.pid, signal.SIGKILL)
    sys.exit(1)
signal.signal(signal.SIGTERM, kill)
keys = sys.stdin.fileno()
watch = [master, keys]
saw_raw = False
deadline = time.monotonic() + 30
quiet_since = None
while True:
    if time.monotonic() > deadline:
        kill()
    if not termios.tcgetattr(slave)[3] & termios.ICANON:
        saw_raw = True
    ready, _, _ = select.select(watch, [], [], 0.05)
    if master in ready:
        os.write(1, os.read(master, 65536))
        quiet_since = None
    if keys in ready:
        data = os.read(keys, 65536)
        if data:
            os.write(master, data)
        else:
            watch.remove(keys)
    if master not in ready and child.poll() is not None:
        if quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 0.2:
            break
after = termios.tcgetattr(slave)
print(json.dumps({"code": child.returncode, "sawRaw": saw_raw, "restored": after == before}),
      file=sys.stderr)
`;

/** How the terminal session ended. */
interface Ended {
  code: number;
  /** The terminal was in raw (non-canonical) mode at some point. */
  sawRaw: boolean;
  /** The terminal's mode afterwards equals its mode before. */
  restored: boolean;
  /** Every byte the terminal received, as text. */
  shown: string;
  /** The screen those bytes leave, one string per row. */
  screen: string[];
}

/** A program running on a pseudo-terminal: type into it, watch what it shows. */
class Terminal {
  readonly child: Deno.ChildProcess;
  readonly shown: Output;
  readonly #stderr: Output;
  readonly #keys: WritableStreamDefaultWriter<Uint8Array>;
  #ended?: Promise<Ended>;

  /** Runs `sh -c script` on the terminal, in the project folder. */
  constructor(script: string) {
    this.child = new Deno.Command("python3", {
      args: ["-c", PTY_BRIDGE, "sh", "-c", script],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.shown = new Output(this.child.stdout);
    this.#stderr = new Output(this.child.stderr);
    this.#keys = this.child.stdin.getWriter();
  }

  /** Presses keys: `text` goes to the terminal as typed bytes. */
  type(text: string | Uint8Array): Promise<void> {
    return this.#keys.write(typeof text === "string" ? encoder.encode(text) : text);
  }

  /** Waits for the program to end (bounded), and reads what it left. */
  ended(): Promise<Ended> {
    this.#ended ??= (async () => {
      await this.#keys.close().catch(() => {});
      const status = await withTimeout(this.child.status, WAIT_MS, "the terminal", () => {
        this.child.kill("SIGTERM");
      });
      await Promise.all([this.shown.done, this.#stderr.done]);
      const line = this.#stderr.text.trim().split("\n").at(-1) ?? "";
      if (status.code !== 0 || !line.startsWith("{")) {
        throw new Error(`the pty bridge failed (${status.code}): ${this.#stderr.text}`);
      }
      const result = JSON.parse(line) as Omit<Ended, "shown" | "screen">;
      return { ...result, shown: this.shown.text, screen: render(this.shown.text) };
    })();
    return this.#ended;
  }

  /** Ends the session whatever state it is in (for `finally`). */
  async close(): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch { /* ended already */ }
    await this.ended().catch(() => {});
  }
}

/**
 * Plays terminal output on a screen and returns its rows: printable
 * characters overwrite at the cursor, `\r` goes to the row's start, `\n`
 * down a row, `\b` back one column, `ESC [ K` erases to the end of the row;
 * `deno task`'s own `ESC [ 0G`, `ESC [ 2K` and `ESC [ J` do what they do, and
 * colours nothing; empty rows at the end are left out. Anything else is an
 * error: no other sequence should reach it.
 */
function render(shown: string): string[] {
  const rows: string[][] = [[]];
  let row = 0;
  let col = 0;
  const chars = [...shown];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i];
    if (c === "\r") col = 0;
    else if (c === "\n") rows[++row] ??= [];
    else if (c === "\b") col = Math.max(0, col - 1);
    else if (c === "\x07") continue;
    else if (c === "\x1b" && chars[i + 1] === "[") {
      let end = i + 2;
      while (end < chars.length && !/[@-~]/.test(chars[end])) end++;
      const sequence = chars.slice(i + 1, end + 1).join(""); // after the ESC
      if (/^\[0?K$/.test(sequence)) rows[row].length = Math.min(rows[row].length, col);
      else if (sequence === "[2K") rows[row] = [];
      else if (sequence === "[0G") col = 0;
      else if (!/^\[([\d;]*m|J)$/.test(sequence)) { // colours; J: erase below (empty here)
        throw new Error(
          `unexpected sequence ${JSON.stringify(sequence)} in ${JSON.stringify(shown)}`,
        );
      }
      i = end;
    } else if (c < " ") {
      throw new Error(`unexpected control ${JSON.stringify(c)} in ${JSON.stringify(shown)}`);
    } else {
      while (rows[row].length < col) rows[row].push(" ");
      rows[row][col++] = c;
    }
  }
  const screen = rows.map((r) => r.join("").trimEnd());
  while (screen.at(-1) === "") screen.pop(); // the empty rows below the last output
  return screen;
}

Deno.test("render: a tiny screen for terminal output", () => {
  assert.deepEqual(render("ab\rX\r\nc\x1b[2mde\x1b[22m\bZ\r\n> typ\r\x1b[Kroom\r\n> typ"), [
    "Xb",
    "cdZ",
    "room",
    "> typ",
  ]);
  assert.deepEqual(render("one\r\n\r\n"), ["one"]);
});

type Join = (name: string) => Promise<LineClient>;

/**
 * Runs `body` against a fresh chat_server (`--port 0`): `join` connects a
 * Deno client that takes a name, `run` starts `script` (with PORT replaced by
 * the server's port) on a pseudo-terminal. Everything is closed afterwards.
 */
function withRoom(
  body: (server: Server, join: Join, run: (script: string) => Terminal) => Promise<void>,
): () => Promise<void> {
  return async () => {
    const server = await startServer("chat_server", ["--port", "0"]);
    const clients: LineClient[] = [];
    const terminals: Terminal[] = [];
    try {
      await body(server, async (name) => {
        const c = await LineClient.connect(server.port);
        clients.push(c);
        assert.equal(await c.line(), "* name?");
        assert.match(await c.ask(name) ?? "", new RegExp(`^\\* welcome ${name}; `));
        return c;
      }, (script) => {
        const t = new Terminal(script.replaceAll("PORT", String(server.port)));
        terminals.push(t);
        return t;
      });
    } finally {
      for (const c of clients) c.close();
      await Promise.all(terminals.map((t) => t.close()));
      await server.stop();
    }
  };
}

/** Reads lines until one equals `want`; returns the lines before it. Bounded by count and time. */
async function until(c: LineClient, want: string, max = 100): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < max; i++) {
    const line = await c.line();
    if (line === want) return seen;
    if (line === null) throw new Error(`closed before '${JSON.stringify(want)}'; saw ${seen}`);
    seen.push(line);
  }
  throw new Error(`no '${JSON.stringify(want)}' in ${max} lines: ${seen}`);
}

const BOB = "deno task chat_client --port PORT --name bob";
const CTRL_C = "\x03";
const CTRL_D = "\x04";
const CTRL_U = "\x15";

Deno.test({
  name:
    "chat_client on a terminal: a room line arriving mid-typing prints on its own line; the typed text is redrawn intact",
  ignore: !HAS_PYTHON,
  fn: withRoom(async (_, join, run) => {
    const alice = await join("alice");
    const bob = run(BOB);
    await bob.shown.waitFor("* welcome bob");
    assert.equal(await alice.line(), "* bob joined");
    await bob.type("typing half a li");
    await bob.shown.waitFor("typing half a li");
    await alice.send("while you type\n");
    await bob.shown.waitFor("alice: while you type");
    await bob.type("ne\r");
    assert.equal(await alice.line(), "bob: typing half a line");
    await bob.type(CTRL_D); // an empty line: leave as before
    const end = await bob.ended();
    assert.equal(end.code, 0, end.shown);
    const rows = end.screen;
    const room = rows.indexOf("alice: while you type");
    assert.ok(room >= 0, `the room line is not on a row of its own:\n${rows.join("\n")}`);
    assert.equal(
      rows[room + 1],
      "> typing half a line",
      `after the room line:\n${rows.join("\n")}`,
    );
    assert.ok(!end.shown.includes("lialice"), "the room line was spliced into the typed text");
    assert.match(rows.at(-1)!, /^sent 1 line\(s\), received \d+ line\(s\)$/);
    assert.ok(end.sawRaw, "the terminal was never in raw mode");
    assert.ok(end.restored, "the terminal's mode was not restored");
    assert.equal(await alice.line(), "* bob left");
  }),
});

Deno.test({
  name:
    "chat_client on a terminal: Backspace, Ctrl+U, UTF-8, and arrow keys and other control keys leave no junk",
  ignore: !HAS_PYTHON,
  fn: withRoom(async (_, join, run) => {
    const alice = await join("alice");
    const bob = run(BOB);
    await bob.shown.waitFor("* welcome bob");
    assert.equal(await alice.line(), "* bob joined");
    // Backspace as DEL (0x7f) and as BS (0x08); each deletes one character,
    // a 3-byte ✓ included; arrows (ESC [ A, ESC O D), Ctrl+A and Tab are ignored.
    await bob.type("héllo wörld ✓x\x7f\x1b[A\x1bOD\x01\t✓\b✓");
    await bob.type("\r");
    assert.equal(await alice.line(), "bob: héllo wörld ✓✓");
    // Ctrl+U clears the line; a character split across two writes is still one character.
    await bob.type("junk" + CTRL_U);
    const check = encoder.encode("✓");
    await bob.type(check.subarray(0, 1));
    await bob.type(check.subarray(1));
    await bob.type("fine\r");
    assert.equal(await alice.line(), "bob: ✓fine");
    // A room line while a UTF-8 line is half typed.
    await bob.type("ça va ");
    await bob.shown.waitFor("ça va ");
    await alice.send("oui\n");
    await bob.shown.waitFor("alice: oui");
    await bob.type("✓\r");
    assert.equal(await alice.line(), "bob: ça va ✓");
    await bob.type(CTRL_D);
    const end = await bob.ended();
    assert.equal(end.code, 0, end.shown);
    const rows = end.screen;
    for (const row of ["> héllo wörld ✓✓", "> ✓fine", "alice: oui", "> ça va ✓"]) {
      assert.ok(rows.includes(row), `no row '${row}' on the screen:\n${rows.join("\n")}`);
    }
    assert.ok(end.restored, "the terminal's mode was not restored");
  }),
});

Deno.test({
  name:
    "chat_client on a terminal: Ctrl+C and a closing server both give the terminal back as it was",
  ignore: !HAS_PYTHON,
  fn: withRoom(async (server, join, run) => {
    const alice = await join("alice");
    // Ctrl+C with half a line typed: leaves at once (exit 0), the half line is not sent.
    const bob = run(BOB);
    await bob.shown.waitFor("* welcome bob");
    await bob.type("never sent");
    await bob.shown.waitFor("never sent");
    await bob.type(CTRL_C);
    const interrupted = await bob.ended();
    assert.equal(interrupted.code, 0, interrupted.shown);
    assert.deepEqual(await until(alice, "* bob left"), ["* bob joined"]);
    assert.ok(interrupted.sawRaw, "the terminal was never in raw mode");
    assert.ok(interrupted.restored, "Ctrl+C: the terminal's mode was not restored");
    assert.match(interrupted.screen.at(-1)!, /^sent 0 line\(s\), received 2 line\(s\)$/);
    // The server stops while carol types: an error line, exit 1, the terminal restored.
    const carol = run("deno task chat_client --port PORT --name carol");
    await carol.shown.waitFor("* welcome carol");
    await carol.type("half a li");
    await carol.shown.waitFor("half a li");
    assert.equal((await server.stop()).code, 0);
    const dropped = await carol.ended();
    assert.equal(dropped.code, 1, dropped.shown);
    assert.ok(dropped.sawRaw, "the terminal was never in raw mode");
    assert.ok(dropped.restored, "server closed: the terminal's mode was not restored");
    const [counts, error] = dropped.screen.slice(-2);
    assert.match(counts, /^sent 0 line\(s\), received \d+ line\(s\)$/);
    assert.equal(error, "error: the server closed the connection");
    // The half-typed line was cleared before those lines: no prompt is left on the screen.
    assert.deepEqual(dropped.screen.filter((row) => row.startsWith(">")), []);
  }),
});

Deno.test({
  name:
    "chat_client on a terminal: with input or output not a terminal, no raw mode and no escape sequence",
  ignore: !HAS_PYTHON,
  fn: withRoom(async (_, join, run) => {
    const alice = await join("alice");
    // Output to a pipe: the terminal stays cooked and echoes; the client's output has no ESC.
    const piped = run(`${BOB} | cat -v`); // cat -v shows an ESC as ^[
    await piped.shown.waitFor("* welcome bob"); // through cat, on the terminal
    assert.equal(await alice.line(), "* bob joined");
    await piped.type("hello\r");
    assert.equal(await alice.line(), "bob: hello");
    await piped.type(CTRL_D);
    const end = await piped.ended();
    assert.equal(end.code, 0, end.shown);
    assert.ok(!end.sawRaw, "raw mode with output to a pipe");
    assert.ok(!end.shown.includes("^["), `an escape sequence in the piped output:\n${end.shown}`);
    // Input from a pipe, output to the terminal: lines as they come, no prompt, no ESC [ K.
    const fed = run(`printf 'from a pipe\\n' | ${BOB}`);
    assert.deepEqual(await until(alice, "bob: from a pipe"), ["* bob left", "* bob joined"]);
    const fedEnd = await fed.ended();
    assert.equal(fedEnd.code, 0, fedEnd.shown);
    assert.ok(!fedEnd.sawRaw, "raw mode with input from a pipe");
    assert.ok(!fedEnd.shown.includes("\x1b[K"), "line editing with input from a pipe");
    assert.ok(!fedEnd.screen.some((r) => r.startsWith("> ")), "a prompt with input from a pipe");
  }),
});
