/**
 * The naive tour (`deno task demo --naive`): the same traffic, on loopback,
 * to a naive server of this folder and to scripts/socket_server_with_select.ts,
 * each on a fresh server, and what each client got back, side by side.
 *
 * Every attack is something a real network or a real client does: a line
 * that arrives in two pieces, a line longer than one read, a client that
 * half-closes (`nc -N`) and waits for its replies, and a client whose process
 * ends with an answer unread, so that its kernel resets the connection (a
 * Deno client's own `close()` sends FIN first; a process that exits does not
 * get the chance). Not an example to copy: the tour's own plumbing.
 *
 * @module
 */

import { Running, taskCommand } from "../scripts/demo/processes.ts";
import { paint, showBytes } from "../lib/text.ts";

const encoder = new TextEncoder();

/** What one attack did to one server. */
interface Outcome {
  /** What the client got back, as lines to show. */
  got: string[];
  /** How the server ended, if the attack killed it. */
  died?: string;
}

interface Attack {
  title: string;
  naive: string;
  /** Flags for our server. */
  oursArgs?: string[];
  /** Talks to the server on `port`; returns what to show of the replies. */
  run: (port: number) => Promise<string[]>;
  /** Whether the replies are right (ours must be). */
  right: (got: string[]) => boolean;
}

const ATTACKS: Attack[] = [
  {
    title: `a line in two pieces: "hel", a pause, then "lo\\n"`,
    naive: "naive/ok_server.ts",
    run: async (port) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(encoder.encode("hel"));
        await new Promise((r) => setTimeout(r, 300)); // the pause a network may make
        await conn.write(encoder.encode("lo\n"));
        // Both "OK ... lo\n" (naive) and "OK ... hello\n" end the same way.
        return lines(await readUntil(conn, (text) => text.endsWith("lo\n")));
      } finally {
        conn.close();
      }
    },
    right: (got) => got.join("|") === "OK ... hello",
  },
  {
    title: "a long line: 100,000 bytes, then \\n (ours: --max-line 200000, its default is 64 KiB)",
    naive: "naive/ok_server.ts",
    oursArgs: ["--max-line", "200000"],
    run: async (port) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(encoder.encode("x".repeat(100_000) + "\n"));
        const text = await readUntil(conn, (t) => count(t, "x") >= 100_000 && t.endsWith("\n"));
        const replies = text.split("\n").filter((l) => l);
        const sizes = replies.map((r) => (r.length + 1).toLocaleString("en")).join(" + ");
        return replies.length === 1
          ? [`1 reply, of ${sizes} bytes`]
          : [`${replies.length} replies, of ${sizes} bytes: "OK ... " + one read each + "\\n"`];
      } finally {
        conn.close();
      }
    },
    right: (got) => got[0].startsWith("1 reply,"),
  },
  {
    title: `a half-close: "a\\nb\\n", then FIN ("no more from me"), then read the replies`,
    naive: "naive/ok_server.ts",
    run: async (port) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(encoder.encode("a\nb\n"));
        await conn.closeWrite();
        return lines(await readUntil(conn, () => false)); // to the server's end of stream
      } finally {
        conn.close();
      }
    },
    right: (got) => got.join("|") === "OK ... a|OK ... b",
  },
  {
    title: "a reset: a client's process ends with an answer unread, so its kernel sends RST",
    naive: "naive/echo_server.ts",
    run: async (port) => {
      // A child process: it sends a line, reads one byte of the answer and exits.
      const code = `const c = await Deno.connect({ hostname: "127.0.0.1", port: ${port} });
        await c.write(new TextEncoder().encode("hi\\n"));
        await c.read(new Uint8Array(1));
        Deno.exit(0);`;
      await new Deno.Command(Deno.execPath(), { args: ["eval", code], stderr: "null" }).output();
      return ["(the client was reset; a next client says 'next')", ...await ask(port, "next\n")];
    },
    right: (got) => got.at(-1) === "OK ... next",
  },
];

/** Reads until `done(text)` or the server's end of stream, for 3 s at most. */
async function readUntil(conn: Deno.Conn, done: (text: string) => boolean): Promise<string> {
  const decoder = new TextDecoder();
  const buf = new Uint8Array(64 * 1024);
  let text = "";
  const timer = setTimeout(() => conn.close(), 3_000); // a read cannot be cancelled: close
  try {
    while (!done(text)) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n), { stream: true });
    }
  } catch {
    // reset, or closed by the timer: what came is what we show
  } finally {
    clearTimeout(timer);
  }
  return text;
}

/** One line to a new connection, and the replies until the server closes or 3 s pass. */
async function ask(port: number, line: string): Promise<string[]> {
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch {
    return ["(connection refused: nothing listens any more)"];
  }
  try {
    await conn.write(encoder.encode(line));
    const got = lines(await readUntil(conn, (t) => t.endsWith("\n")));
    return got.length ? got : ["(no answer)"];
  } catch {
    return ["(the connection failed)"];
  } finally {
    conn.close();
  }
}

const lines = (text: string) => text.split("\n").filter((l) => l).map(shown);
const shown = (line: string) => showBytes(encoder.encode(line), 60);
const count = (text: string, char: string) => text.split(char).length - 1;

/** Runs `attack` against a fresh server started with `argv`. */
async function attackServer(argv: string[], attack: Attack): Promise<Outcome> {
  const server = new Running([...argv, "--port", "0"]);
  try {
    const [, port] = await server.stdout.waitFor(/listening on \S+:(\d+)/, 10_000);
    const got = await attack.run(Number(port));
    // Did it survive? A dead server's process has exited by the time a next client asks.
    const alive = (await ask(Number(port), "still there?\n")).some((l) => l.includes("still"));
    if (alive) return { got };
    const done = await server.finished(5_000);
    const why = done.stderr.split("\n").find((l) => l.startsWith("error:")) ?? "";
    return { got, died: `the server died (exit ${done.code}): ${why}` };
  } finally {
    server.kill("SIGKILL");
    await server.finished(5_000);
  }
}

function show(label: string, outcome: Outcome): void {
  const width = 28;
  const rows = [...outcome.got, ...(outcome.died ? [outcome.died] : [])];
  rows.forEach((row, i) => {
    const who = i === 0 ? label.padEnd(width) : " ".repeat(width);
    console.log(`  ${paint("dim", who)} │ ${row}`);
  });
}

/**
 * Runs every attack against the naive server and ours; prints the results.
 * Resolves false if ours ever answered wrongly or died.
 */
export async function naiveTour(): Promise<boolean> {
  console.log("The naive servers of naive/ against ours: the same traffic, each on a new server.");
  let oursHeld = true;
  for (const [i, attack] of ATTACKS.entries()) {
    console.log(`\n${paint("bold", `━━ ${i + 1}/${ATTACKS.length} ${attack.title}`)}`);
    const naive = await attackServer(["run", "--allow-net=127.0.0.1", attack.naive], attack);
    show(attack.naive, naive);
    const oursArgv = [...taskCommand("socket_server_with_select"), ...attack.oursArgs ?? []];
    const ours = await attackServer(oursArgv, attack);
    show("socket_server_with_select", ours);
    const broke = naive.died !== undefined || !attack.right(naive.got);
    const held = ours.died === undefined && attack.right(ours.got);
    oursHeld &&= held;
    if (!held) console.log(paint("red", "  ✗ ours failed: that is a bug, please report it"));
    else if (broke) console.log(paint("green", "  ✓ the naive server broke; ours did not"));
    else {console.log(
        paint("dim", "  the naive server was lucky this time: the race is not certain"),
      );}
  }
  return oursHeld;
}
