/**
 * bench/http_bench.ts — requests per second of scripts/http_server.ts against
 * Node's own `http` module serving the same page (bench/http_node.mjs): keep-alive
 * `GET /`, `--clients` connections each sending its next request as soon as
 * its response is in, driven by one native load generator (bench/http_load.c,
 * compiled here with `cc -O2`). Rounds alternate between the servers (the
 * order flips each round); medians are printed, with each server's CPU time
 * per request (steadier than throughput on a shared machine) and the ratio.
 * Node is skipped when it is not installed.
 *
 * Run:
 *   deno run --allow-run --allow-read --allow-write bench/http_bench.ts
 *   deno task bench:http --rounds 1 --seconds 1      (a quick look)
 *
 * @module
 */

import { parseCli, runMain } from "../lib/cli.ts";
import { plural } from "../lib/text.ts";
import { Output, ROOT, taskCommand } from "../scripts/demo/processes.ts";

const args = parseCli({
  name: "bench:http",
  summary: "Keep-alive GET / requests per second: our http_server against Node's http.",
  options: {
    clients: { kind: "integer", min: 1, max: 1000, default: 50, help: "keep-alive connections" },
    seconds: { kind: "seconds", default: 3, help: "length of each timed run" },
    rounds: { kind: "integer", min: 1, max: 20, default: 5, help: "rounds per server (median)" },
  },
});

interface Server {
  name: string;
  pid: number;
  port: number;
  stop: () => Promise<void>;
}

async function start(name: string, argv: string[]): Promise<Server> {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
    env: { NO_COLOR: "1" },
  }).spawn();
  const out = new Output(child.stdout);
  const [, port] = await out.waitFor(/listening on \S+:(\d+)/, 15_000);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 3000);
    await child.status;
    clearTimeout(timer);
    await out.done;
  };
  return { name, pid: child.pid, port: Number(port), stop };
}

/** The CPU time (user + system) of a process so far, in seconds (Linux; NaN elsewhere). */
async function cpuSeconds(pid: number): Promise<number> {
  try {
    // Read with cat: Deno grants /proc only with --allow-all.
    const r = await new Deno.Command("cat", { args: [`/proc/${pid}/stat`], stderr: "null" })
      .output();
    if (!r.success) return NaN;
    const stat = new TextDecoder().decode(r.stdout);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // clock ticks of 10 ms
  } catch {
    return NaN;
  }
}

/** One timed run of the load generator against `server`: requests/s and median µs. */
async function load(bin: string, server: Server, seconds: number): Promise<[number, number]> {
  const r = await new Deno.Command(bin, {
    args: ["127.0.0.1", String(server.port), String(args.clients), String(seconds), "/"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(r.stdout);
  if (!r.success) {
    throw new Error(`${server.name}: http_load: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
  const rate = Number(text.match(/requests_per_s=([\d.]+)/)?.[1]);
  const latency = Number(text.match(/median_us=([\d.]+)/)?.[1]);
  return [rate, latency];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const has = (cmd: string) =>
  new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" }).outputSync()
    .success;

await runMain(async () => {
  if (!has("cc")) throw new Error("the benchmark needs a C compiler (cc) for its load generator");
  const dir = await Deno.makeTempDir({ prefix: "http-bench-" });
  const servers: Server[] = [];
  try {
    const bin = `${dir}/http_load`;
    const cc = await new Deno.Command("cc", {
      args: ["-O2", "-o", bin, `${ROOT}bench/http_load.c`],
      stderr: "piped",
    }).output();
    if (!cc.success) throw new Error(`cc: ${new TextDecoder().decode(cc.stderr)}`);
    servers.push(
      await start("deno http_server", [
        Deno.execPath(),
        ...taskCommand("http_server"),
        ...["--port", "0", "--quiet"],
      ]),
    );
    if (has("node")) servers.push(await start("node http", ["node", "bench/http_node.mjs", "0"]));
    else console.log("node is not installed: measuring our server alone");
    const results = new Map(
      servers.map((
        s,
      ) => [s.name, { rate: [] as number[], us: [] as number[], cpu: [] as number[] }]),
    );
    for (const s of servers) await load(bin, s, Math.min(args.seconds, 1)); // warm up the JIT
    for (let round = 0; round < args.rounds; round++) {
      const order = round % 2 === 0 ? servers : [...servers].reverse();
      for (const s of order) {
        const cpu0 = await cpuSeconds(s.pid);
        const [rate, us] = await load(bin, s, args.seconds);
        const cpu = (await cpuSeconds(s.pid)) - cpu0;
        const r = results.get(s.name)!;
        r.rate.push(rate);
        r.us.push(us);
        r.cpu.push(cpu * 1e6 / (rate * args.seconds));
      }
    }
    console.log(
      `keep-alive GET /, ${plural(args.clients, "connection")}, ${args.rounds} round(s) of ` +
        `${args.seconds} s, ` +
        "alternating; medians:",
    );
    for (const [name, r] of results) {
      const cpu = median(r.cpu);
      console.log(
        `  ${name.padEnd(17)} ${Math.round(median(r.rate)).toLocaleString("en-US").padStart(8)} ` +
          `requests/s   median ${median(r.us).toFixed(0)} µs   ` +
          `${Number.isNaN(cpu) ? "-" : cpu.toFixed(1)} µs CPU per request`,
      );
    }
    if (results.size === 2) {
      const [ours, node] = [...results.values()];
      console.log(
        `  deno/node: ${(median(ours.rate) / median(node.rate)).toFixed(2)}x the requests/s, ` +
          `${(median(ours.cpu) / median(node.cpu)).toFixed(2)}x the CPU per request`,
      );
    }
  } finally {
    for (const s of servers) await s.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
