/**
 * bench/chat_bench.ts — fan-out throughput of scripts/chat_server.ts against
 * the same chat on Node's `net` (bench/chat_node.mjs): 100 clients join, one
 * of them sends `--lines` lines of 64 bytes, and we time until each of the 99
 * others has all of them. A delivery is one line reaching one client.
 *
 * The sender stays at most `--window` lines ahead of the slowest reader, as
 * a person typing would: both servers drop a client whose queue overflows,
 * and the point here is the speed of the fan-out, not that rule. Rounds
 * alternate between the servers; medians are printed, with each server's CPU
 * time per delivery (steadier than throughput on a shared machine). Node is
 * skipped when it is not installed.
 *
 * Run:
 *   deno run --allow-run --allow-read --allow-net=127.0.0.1 bench/chat_bench.ts
 *   deno task bench:chat --lines 5000 --rounds 1      (a quick look)
 *
 * @module
 */

import { parseCli, runMain } from "../lib/cli.ts";
import { writeAll } from "../lib/io.ts";
import { Output, ROOT, taskCommand } from "../scripts/demo/processes.ts";

const args = parseCli({
  name: "chat_bench",
  summary: "Fan-out throughput: our chat_server against the same chat on Node's net.",
  options: {
    clients: { kind: "integer", min: 2, max: 1000, default: 100, help: "clients in the room" },
    lines: { kind: "integer", min: 100, max: 1_000_000, default: 50_000, help: "lines sent" },
    window: {
      kind: "integer",
      min: 10,
      max: 100_000,
      default: 1000,
      help: "most lines the sender may be ahead of the slowest reader",
    },
    rounds: { kind: "integer", min: 1, max: 20, default: 3, help: "rounds per server (median)" },
  },
});

const LINE_BYTES = 64; // "c0: " + 59 bytes + "\n"
const PAYLOAD = new TextEncoder().encode("x".repeat(LINE_BYTES - 5) + "\n");
const BATCH = 100; // lines per write by the sender

interface Server {
  name: string;
  argv: string[];
  pid: number;
  port: number;
  stop: () => Promise<void>;
}

async function start(name: string, argv: string[]): Promise<Server> {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: ROOT,
    stdout: "piped",
    stderr: "null",
    env: { NO_COLOR: "1" },
  }).spawn();
  const out = new Output(child.stdout);
  const [, port] = await out.waitFor(/listening on \S+:(\d+)/, 15_000);
  const stop = async () => {
    child.kill("SIGTERM");
    await child.status;
    await out.done;
  };
  return { name, argv, pid: child.pid, port: Number(port), stop };
}

/** The CPU time (user + system) of a process so far, in microseconds (Linux). */
function cpuMicros(pid: number): number {
  // Read with cat: Deno grants /proc only with --allow-all.
  const out = new Deno.Command("cat", { args: [`/proc/${pid}/stat`] }).outputSync();
  const stat = new TextDecoder().decode(out.stdout);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 1e6 / 100; // clock ticks of 10 ms
}

/** A client that counts what it receives. */
class Member {
  conn!: Deno.TcpConn;
  newlines = 0;
  bytes = 0;
  closed = false;
  static changed: (() => void) | undefined;

  async join(port: number, name: string): Promise<void> {
    this.conn = await Deno.connect({ hostname: "127.0.0.1", port });
    this.conn.setNoDelay(true);
    await writeAll(this.conn, new TextEncoder().encode(`${name}\n`));
    this.#read();
  }

  async #read(): Promise<void> {
    const buf = new Uint8Array(256 * 1024);
    try {
      while (true) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        this.bytes += n;
        if (this.newlines >= 0) { for (let i = 0; i < n; i++) if (buf[i] === 10) this.newlines++; }
        Member.changed?.();
      }
    } catch {
      // closed at the end of the round
    }
    this.closed = true;
    Member.changed?.();
  }
}

function changed(): Promise<void> {
  return new Promise((resolve) => Member.changed = resolve);
}

/** One round: the room fills, `lines` lines are sent; returns deliveries/s and CPU µs each. */
async function round(server: Server, lines: number): Promise<[number, number]> {
  const members = Array.from({ length: args.clients }, () => new Member());
  for (const [i, m] of members.entries()) await m.join(server.port, `c${i}`);
  const [sender, ...readers] = members;
  // Everyone has its prompt, welcome and the joins after its own.
  const settled = () => readers.every((m, i) => m.newlines >= 2 + readers.length - 1 - i);
  for (let spins = 0; !settled(); spins++) {
    if (spins > 1_000_000) throw new Error(`${server.name}: the room never filled`);
    await changed();
  }
  for (const m of readers) [m.newlines, m.bytes] = [-1, 0]; // from now on count bytes only
  const batch = new Uint8Array(PAYLOAD.length * BATCH);
  for (let i = 0; i < BATCH; i++) batch.set(PAYLOAD, i * PAYLOAD.length);
  const slowest = () => Math.min(...readers.map((m) => m.bytes)) / LINE_BYTES;
  const cpu0 = cpuMicros(server.pid);
  const t0 = performance.now();
  let sent = 0;
  while (sent < lines) {
    if (sent - slowest() >= args.window) {
      if (readers.some((m) => m.closed)) throw new Error(`${server.name} dropped a reader`);
      await changed();
      continue;
    }
    await writeAll(sender.conn, batch);
    sent += BATCH;
  }
  while (slowest() < sent) {
    if (readers.some((m) => m.closed)) throw new Error(`${server.name} dropped a reader`);
    await changed();
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = cpuMicros(server.pid) - cpu0;
  for (const m of members) m.conn.close();
  for (let spins = 0; members.some((m) => !m.closed) && spins < 1_000_000; spins++) await changed();
  const deliveries = sent * readers.length;
  return [deliveries / seconds, cpu / deliveries];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

await runMain(async () => {
  const hasNode = new Deno.Command("sh", { args: ["-c", "command -v node"], stdout: "null" })
    .outputSync().success;
  const servers = [
    await start("deno chat_server", [
      Deno.execPath(),
      ...taskCommand("chat_server"),
      "--port",
      "0",
      "--quiet",
      "--max-rate", // no flood limit: the sender here is far faster than a person, on purpose,
      "0", // and the Node peer has none
    ]),
  ];
  if (hasNode) servers.push(await start("node chat", ["node", "bench/chat_node.mjs", "0"]));
  else console.log("node is not installed: measuring our server alone");
  const results = new Map(
    servers.map((s) => [s.name, { rate: [] as number[], cpu: [] as number[] }]),
  );
  try {
    for (const s of servers) await round(s, Math.min(args.lines, 2000)); // warm up the JIT
    for (let r = 0; r < args.rounds; r++) {
      for (const s of servers) {
        const [rate, cpu] = await round(s, args.lines);
        results.get(s.name)!.rate.push(rate);
        results.get(s.name)!.cpu.push(cpu);
      }
    }
  } finally {
    for (const s of servers) await s.stop();
  }
  console.log(
    `${args.clients} clients, one sends ${args.lines} lines of ${LINE_BYTES} bytes ` +
      `(at most ${args.window} ahead), ${args.rounds} round(s), medians:`,
  );
  for (const [name, r] of results) {
    console.log(
      `  ${name.padEnd(17)} ${Math.round(median(r.rate)).toLocaleString("en-US").padStart(11)} ` +
        `deliveries/s   ${median(r.cpu).toFixed(3)} µs CPU per delivery`,
    );
  }
  if (results.size === 2) {
    const [ours, node] = [...results.values()];
    console.log(
      `  deno/node: ${(median(ours.rate) / median(node.rate)).toFixed(2)}x the deliveries/s, ` +
        `${(median(ours.cpu) / median(node.cpu)).toFixed(2)}x the CPU per delivery`,
    );
  }
});
