/**
 * demo.ts — the tour: starts each server of the collection on a free loopback
 * port, runs its client against it, and prints what each side said, both
 * sides' lines interleaved in the order they came: cause before effect. * (With `--trace`, a write is printed as it starts and a read once it has
 * returned, so a read comes after the write that sent its bytes; but the
 * tour reads the pipes of several processes at once, and two lines printed
 * within microseconds of each other may, rarely, come swapped.) The multi-client servers get
 * several clients at once, really at once: each client sends a line, waits for its reply, pauses
 * and sends another, and the tour feeds the second lines only once every client has had its first
 * reply, so all of them are connected together. The server's log shows it (every `connected`
 * before any `is offline`), and the clients' replies interleave. By hand, the same: run the `$`
 * line printed for each client in terminals of its own, within half a second.
 *
 * Every pair runs as real processes, with the same command and permissions as
 * its `deno task`, so what you see here is what you get by hand in two
 * terminals. The pairs come in the order of the lessons (LESSONS.md). If a
 * pair fails, the tour says which and exits 1.
 *
 * `--trace` runs every script with its own `--trace`: each read and write on
 * the wire, as it happens. `--naive` runs the other tour: the same traffic (a
 * line in two pieces, a long line, a half-close, a reset) against the naive
 * servers of naive/ and against ours, side by side (`naiveTour`, in
 * naive/tour.ts; it talks to them itself, hence `--allow-net=127.0.0.1`).
 *
 * Run:
 *   deno run --allow-run --allow-read=deno.json --allow-net=127.0.0.1 --allow-write=received scripts/demo.ts
 *   deno task demo          (same thing; `npx -y deno@2 task demo` with only Node)
 *
 * @module
 */

import { parseCli, runMain, usageError } from "../lib/cli.ts";
import { paint } from "../lib/text.ts";
import { ROOT, Running, taskCommand } from "./demo/processes.ts";
import { naiveTour } from "../naive/tour.ts";

const args = parseCli({
  name: "demo",
  summary: "Runs every server with its client on loopback and narrates the conversation.",
  options: {
    only: {
      kind: "string",
      help: "run only the pairs whose title contains TEXT, e.g. sensor (no match: an error)",
    },
    naive: {
      kind: "boolean",
      help: "the naive servers of naive/ and ours, side by side, under the same traffic",
    },
    trace: {
      kind: "boolean",
      help: "run every script with --trace: each read and write on the wire, as it happens",
    },
  },
});

/** One run of the client script. */
interface Client {
  args: (port: number) => string[];
  /** Its output must match this. */
  expect: RegExp;
  /** What it reads on stdin (none: stdin is closed). */
  input?: string;
  /**
   * Lines it sends one at a time (socket_client reads them from stdin as they come): each once
   * the reply to the one before has come, and, the clients of a pair together, a round after
   * every client had the reply of the round before, and a pause.
   */
  paced?: string[];
}

/** The pause between two rounds of paced lines (part of the scenario: the clients stay connected). */
const PAUSE_MS = 500;

interface Pair {
  title: string;
  idea: string;
  server: string;
  serverArgs?: string[];
  client: string;
  /** Run all at once: more than one shows a server serving many. */
  clients: Client[];
  /** The server must print this once per client before it is stopped. */
  serverExpect: RegExp;
  /** The server exits after one client, as its seed did. */
  exitsAlone?: boolean;
  /** A folder the server writes (in the project), removed after the pair: the tour runs again. */
  writes?: string;
  /** A proxy between them (lesson 13): started with the server's port; the clients connect to it. */
  middle?: { script: string; args: (serverPort: number) => string[]; expect: RegExp };
}

const traceFlag = args.trace ? ["--trace"] : [];

/** A socket_client that sends `lines` paced (see `Client.paced`), and must print each reply. */
function pacedClient(...lines: string[]): Client {
  const replies = lines.map((l) => `OK \\.\\.\\. ${escapeRegExp(l)}\\n`).join("");
  return { args: (port) => ["--port", `${port}`], paced: lines, expect: new RegExp(replies) };
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

const PAIRS: Pair[] = [
  {
    title: "hello_server + hello_client",
    idea: "the first conversation: a greeting and an answer",
    server: "hello_server",
    client: "hello_client",
    clients: [{ args: (port) => ["--port", `${port}`], expect: /Server: Hello client!/ }],
    serverExpect: /Client: Hello Server!/,
    exitsAlone: true,
  },
  {
    title: "basic_server + basic_client",
    idea: "one message, one answer, close",
    server: "basic_server",
    client: "basic_client",
    clients: [{
      args: (port) => ["--port", `${port}`],
      expect: /Response from the server: Message received: Hello Server !/,
    }],
    serverExpect: /Hello Server !/,
  },
  {
    title: "socket_server + socket_client",
    idea: "one client at a time; every line is answered 'OK ... <line>'",
    server: "socket_server",
    client: "socket_client",
    clients: [{
      args: (port) => ["--port", `${port}`, "-m", "temperature 21.5", "-m", "door open"],
      expect: /OK \.\.\. temperature 21\.5\nOK \.\.\. door open/,
    }],
    serverExpect: /is offline/,
  },
  {
    title: "tcp_server + tcp_client",
    idea: "exactly 32 bytes of 0x02, however TCP splits them",
    server: "tcp_server",
    client: "tcp_client",
    clients: [{
      args: (port) => ["--host", "127.0.0.1", "--port", `${port}`],
      expect: /sent 32 bytes of 0x02/,
    }],
    serverExpect: /sent 32 bytes: (02 ){31}02/,
  },
  {
    title: "socket_server_with_select + socket_client",
    idea: "many clients at once on one thread: the event loop plays select()",
    server: "socket_server_with_select",
    client: "socket_client",
    clients: [
      pacedClient("pressure 1013 hPa", "pressure 1012 hPa"),
      pacedClient("humidity 40%", "humidity 41%"),
    ],
    serverExpect: /is offline/,
  },
  {
    title: "socket_server_threads + socket_client",
    idea: "many clients at once on a pool of worker threads sharing the port",
    server: "socket_server_threads",
    serverArgs: ["--workers", "2"],
    client: "socket_client",
    clients: [
      pacedClient("valve closed", "valve open"),
      pacedClient("pump on", "pump off"),
      pacedClient("fan off", "fan on"),
    ],
    serverExpect: /\[worker \d\] Client \(\S+\) is offline/,
  },
  {
    title: "sensor_server + sensor_client",
    idea: "timestamped readings, each answered 'pong', round trips timed",
    server: "sensor_server",
    client: "sensor_client",
    clients: [{
      args: (port) => ["--port", `${port}`, "--count", "3", "--interval", "0.2"],
      expect: /3 samples sent, 3 received, 0% loss/,
    }],
    serverExpect: /is offline/,
  },
  {
    title: "bind_socket (against socket_server)",
    idea: "resolve a name through the hosts file, then connect",
    server: "socket_server",
    client: "bind_socket",
    clients: [{
      args: (port) => ["--host", "localhost", "--port", `${port}`],
      expect: /IP address of localhost is 127\.0\.0\.1\nSocket created\nSocket connected/,
    }],
    serverExpect: /is offline/,
  },
  {
    title: "chat_server + chat_client",
    idea: "a chat room: a name first, then every line goes to everyone else",
    server: "chat_server",
    client: "chat_client",
    clients: [{
      args: (port) => ["--port", `${port}`, "--name", "alice"],
      input: "hello, room\n",
      expect: /\* welcome alice; nobody else is here/,
    }],
    serverExpect: /alice left/,
  },
  {
    title: "file_server + file_client",
    idea: "a file sent with a length prefix, checked with its sha256",
    server: "file_server",
    serverArgs: ["--dir", "received/tour"],
    writes: "received/tour",
    client: "file_client",
    clients: [{
      args: (port) => ["--port", `${port}`, "LICENSE"],
      expect: /LICENSE: sent 931 bytes .* sha256 matches/,
    }],
    serverExpect: /stored 'LICENSE' \(931 bytes\)/,
  },
  {
    title: "udp_server + udp_client",
    idea: "datagrams: no connection; --drop and --delay lose and reorder, replies matched by seq",
    server: "udp_server",
    serverArgs: ["--drop", "0.2", "--delay", "100"],
    client: "udp_client",
    clients: [{
      args: (
        port,
      ) => ["--port", `${port}`, "--count", "10", "--interval", "0.05", "--timeout", "0.5"],
      expect: /10 sent, \d+ received, \d+% loss/,
    }],
    serverExpect: /Received: ping 10 /,
  },
  {
    title: "http_server + bind_socket --request",
    idea: "HTTP/1.1 by hand: a head of CRLF lines; every response says its Content-Length",
    server: "http_server",
    client: "bind_socket",
    clients: [{
      args: (port) => ["--host", "localhost", "--port", `${port}`, "--request"],
      expect: /Socket connected to localhost[\s\S]*HTTP\/1\.1 200 OK/,
    }],
    serverExpect: /HEAD \/ HTTP\/1\.1 -> 200/,
  },
  {
    title: "tcp_proxy (socket_client → tcp_proxy → socket_server)",
    idea: "a server that is also a client: every byte copied both ways, a half-close passed on",
    server: "socket_server",
    middle: {
      script: "tcp_proxy",
      args: (port) => ["--to", `127.0.0.1:${port}`],
      expect: /is offline: 27 B to the target, 41 B back/,
    },
    client: "socket_client",
    clients: [{
      args: (port) => ["--port", `${port}`, "-m", "through the proxy", "-m", "and back"],
      expect: /OK \.\.\. through the proxy\nOK \.\.\. and back/,
    }],
    serverExpect: /is offline/,
  },
  {
    title: "tls_server + tls_client",
    idea: "the same lines over TLS: the client checks the certificate (learning CA in certs/)",
    server: "tls_server",
    client: "tls_client",
    clients: [{
      args: (port) => ["--port", `${port}`, "-m", "valve open", "-m", "valve closed"],
      expect: /OK \.\.\. valve open\nOK \.\.\. valve closed/,
    }],
    serverExpect: /is offline/,
  },
];

/** * Prints every line `proc` prints as it arrives, labelled `who`, so that the
 * sides interleave in the order things happened (but see the top comment).
 */
function narrate(who: string, proc: Running): void {
  const show = (line: string) => {
    if (line.trim()) console.log(`  ${paint("dim", who.padEnd(8))} │ ${line}`);
  };
  proc.stdout.onLine(show);
  proc.stderr.onLine(show);
}

/** Starts one client, printing the command a reader would type for it. */
function startClient(pair: Pair, client: Client, port: number, who: string): Running {
  const args = [...client.args(port), ...traceFlag];
  const input = client.input !== undefined
    ? `printf '${client.input.replace("\n", "\\n")}' | `
    : client.paced
    ? `(${client.paced.map((l) => `echo ${quote(l)}`).join(`; sleep ${PAUSE_MS / 1000}; `)}) | `
    : "";
  console.log(`  $ ${input}deno task ${pair.client} ${args.map(quote).join(" ")}`);
  const running = new Running(
    [...taskCommand(pair.client), ...args],
    client.input !== undefined || client.paced ? "piped" : "null",
  );
  narrate(who, running);
  return running;
}

/** Writes `client.input` to its stdin and closes it. */
async function feed(client: Client, running: Running): Promise<void> {
  if (client.input === undefined) return;
  const writer = running.child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(client.input));
  await writer.close();
}

/**
 * Sends the paced clients' lines in rounds: in each, every client sends its next line and waits
 * for its reply; between rounds, a pause. Every client stays connected until the last round is
 * answered, so the server holds them all at once. Their stdins are closed at the end.
 */
async function pace(clients: Client[], running: Running[]): Promise<void> {
  const paced = clients.map((c, i) => ({ lines: c.paced ?? [], proc: running[i] }))
    .filter((p) => p.lines.length > 0)
    .map((p) => ({ ...p, writer: p.proc.child.stdin.getWriter() }));
  try {
    const rounds = Math.max(0, ...paced.map((p) => p.lines.length));
    for (let round = 0; round < rounds; round++) {
      if (round > 0) await new Promise((r) => setTimeout(r, PAUSE_MS));
      await Promise.all(paced.map(async ({ lines, proc, writer }) => {
        if (round >= lines.length) return;
        await writer.write(new TextEncoder().encode(`${lines[round]}\n`));
        const reply = new RegExp(`^OK \\.\\.\\. ${escapeRegExp(lines[round])}$`, "m");
        await proc.stdout.waitFor(reply, 10_000);
      }));
    }
  } finally {
    await Promise.all(paced.map((p) => p.writer.close().catch(() => {})));
  }
}

/** Waits for a client to end; resolves with why it failed, or "" if it worked. */
async function finishClient(client: Client, running: Running, who: string): Promise<string> {
  const done = await running.finished(20_000);
  if (done.code !== 0) return `${who} exited with code ${done.code}`;
  if (!client.expect.test(done.stdout)) return `${who} did not print ${client.expect}`;
  return "";
}

async function runPair(pair: Pair, n: number, total: number): Promise<boolean> {
  console.log(`\n${paint("bold", `━━ ${n}/${total} ${pair.title}`)}  ${paint("dim", pair.idea)}`);
  const serverArgs = ["--port", "0", ...(pair.serverArgs ?? []), ...traceFlag];
  console.log(`  $ deno task ${pair.server} ${serverArgs.join(" ")}`);
  const server = new Running([...taskCommand(pair.server), ...serverArgs]);
  narrate("server", server);
  let ok = false;
  let why = "";
  let middle: Running | undefined;
  try {
    const [, serverPort] = await server.stdout.waitFor(/listening on \S+:(\d+)/, 10_000);
    let port = serverPort;
    if (pair.middle) {
      const middleArgs = ["--port", "0", ...pair.middle.args(Number(serverPort)), ...traceFlag];
      console.log(`  $ deno task ${pair.middle.script} ${middleArgs.join(" ")}`);
      middle = new Running([...taskCommand(pair.middle.script), ...middleArgs]);
      narrate("proxy", middle);
      [, port] = await middle.stdout.waitFor(/listening on \S+:(\d+)/, 10_000);
    }
    const many = pair.clients.length > 1;
    if (many) {
      const how = pair.clients.every((c) => c.paced)
        ? `: each sends a line, waits for its reply, pauses ${PAUSE_MS / 1000} s, sends another`
        : "";
      console.log(`  ${paint("dim", `(${pair.clients.length} clients at once${how})`)}`);
    }
    const who = (i: number) => many ? `client ${i + 1}` : "client";
    const running = pair.clients.map((c, i) => startClient(pair, c, Number(port), who(i)));
    const fed = await Promise.all([
      ...pair.clients.map((c, i) => feed(c, running[i])),
      pace(pair.clients, running),
    ].map((p) => p.then(() => "", (err: Error) => err.message.split("\n")[0])));
    const failures = await Promise.all(
      pair.clients.map((c, i) => finishClient(c, running[i], who(i))),
    );
    why = failures.find((f) => f) ?? fed.find((f) => f) ?? "";
    if (!why) {
      await server.stdout.waitForCount(pair.serverExpect, pair.clients.length, 10_000);
      if (pair.middle) await middle!.stdout.waitFor(pair.middle.expect, 10_000);
      ok = true;
    }
  } catch (err) {
    why = (err as Error).message.split("\n")[0];
  } finally {
    if (middle) {
      middle.kill("SIGTERM");
      await middle.finished(5_000);
    }
    if (!pair.exitsAlone || !ok) {
      console.log(`  ${paint("dim", "(the tour stops the server, as Ctrl+C would)")}`);
      server.kill("SIGTERM");
    }
    await server.finished(5_000);
    if (pair.writes) {
      await Deno.remove(`${ROOT}${pair.writes}`, { recursive: true }).catch(() => {});
      await Deno.remove(`${ROOT}${pair.writes.split("/")[0]}`).catch(() => {}); // if now empty
    }
  }
  console.log(ok ? paint("green", "  ✓ worked") : paint("red", `  ✗ failed: ${why}`));
  return ok;
}

function quote(arg: string): string {
  return /^[\w.\/:=-]+$/.test(arg) ? arg : `'${arg}'`;
}

await runMain(async () => {
  if (args.naive) {
    if (args.only || args.trace) {
      usageError("demo", "--naive runs a tour of its own: no --only or --trace");
    }
    if (!(await naiveTour())) throw new Error("one of our servers failed the naive tour");
    console.log("\nThe lesson: a read is not a message, and one client must not end the server.");
    return;
  }
  const pairs = PAIRS.filter((p) => !args.only || p.title.includes(args.only));
  if (pairs.length === 0) {
    // Running nothing and saying "all worked" would be a lie.
    usageError(
      "demo",
      `no pair's title contains '${args.only}'; the pairs are: ${
        PAIRS.map((p) => p.title).join(", ")
      }`,
    );
  }
  console.log("A tour of the collection: each server on a free loopback port, then its client.");
  const failed: string[] = [];
  for (const [i, pair] of pairs.entries()) {
    if (!(await runPair(pair, i + 1, pairs.length))) failed.push(pair.title);
  }
  console.log();
  if (failed.length > 0) {
    throw new Error(`${failed.length} of ${pairs.length} pairs failed: ${failed.join(", ")}`);
  }
  const all = pairs.length === 1 ? "The pair worked." : `All ${pairs.length} pairs worked.`;
  console.log(paint("green", all) + " Next: deno task test");
});
