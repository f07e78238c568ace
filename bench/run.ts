/**
 * bench/run.ts — `deno task bench`: our line servers against peers, measured
 * in the same run by the same native load generator, alternating, medians.
 *
 * Servers: socket_server_with_select.ts and socket_server_threads.ts (ours),
 * a Node `net` line server and a Python `selectors` line server (the peers),
 * and a C epoll server (the ceiling: it shows the load generator is not the
 * bottleneck), also run with 2 threads on SO_REUSEPORT listeners (what a
 * second thread can gain on this machine, where the load generator shares
 * the cores). The load generator and the C server are compiled here with
 * `cc -O2` (bench/loadgen.c, bench/epoll_server.c). Peers that are not
 * installed are skipped.
 *
 * `--baseline REF` also runs our two servers as they were at git commit REF
 * (checked out in a temporary worktree), side by side with today's, so a
 * change is judged against the code before it in the same run.
 *
 * Run:
 *   deno run --allow-run --allow-read --allow-write bench/run.ts
 *   deno task bench          (same thing; --rounds 1 --seconds 0.5 for a quick look)
 *
 * @module
 */

import { parseCli, runMain } from "../lib/cli.ts";
import { Output, ROOT, taskCommand } from "../lib/process.ts";

const args = parseCli({
  name: "bench",
  summary: "Benchmarks our servers against Node, Python and C peers on loopback.",
  options: {
    rounds: { kind: "integer", min: 1, default: 3, help: "rounds per measurement (median taken)" },
    seconds: { kind: "seconds", default: 2, help: "length of each timed run" },
    idle: {
      kind: "integer",
      min: 0,
      default: 10_000,
      help: "idle clients for the memory test (0: skip)",
    },
    hold: {
      kind: "seconds",
      default: 35,
      help: "how long the idle clients are held before memory is measured again",
    },
    baseline: {
      kind: "string",
      valueName: "REF",
      help: "also run our servers as of this git commit, side by side",
    },
  },
});

interface Server {
  name: string;
  argv: [string, ...string[]];
  cwd?: string;
  process?: { pid: number; stop: () => Promise<void> };
  port?: number;
}

const has = (cmd: string) =>
  new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" }).outputSync()
    .success;

async function compile(dir: string, name: string): Promise<string> {
  const out = `${dir}/${name}`;
  const r = await new Deno.Command("cc", {
    args: ["-O2", "-pthread", "-o", out, `${ROOT}/bench/${name}.c`],
  }).output();
  if (!r.success) {
    throw new Error(`cc failed for bench/${name}.c: ${new TextDecoder().decode(r.stderr)}`);
  }
  return out;
}

async function start(server: Server): Promise<void> {
  const [cmd, ...rest] = server.argv;
  const child = new Deno.Command(cmd, {
    args: [...rest],
    cwd: server.cwd ?? ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
    env: { NO_COLOR: "1" },
  }).spawn();
  const out = new Output(child.stdout);
  const [, port] = await out.waitFor(/listening on \S+:(\d+)/, 15_000);
  server.port = Number(port);
  server.process = {
    pid: child.pid,
    stop: async () => {
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
    },
  };
}

async function loadgen(bin: string, ...argv: (string | number)[]): Promise<Record<string, number>> {
  const r = await new Deno.Command(bin, {
    args: argv.map(String),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(r.stdout);
  if (!r.success) {
    throw new Error(`loadgen ${argv.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  }
  return Object.fromEntries(
    text.trim().split(/\s+/).map((kv) => kv.split("=")).map(([k, v]) => [k, Number(v)]),
  );
}

/** CPU time (user + system, all threads) a process has used; NaN where /proc is missing. */
async function cpuSeconds(pid: number): Promise<number> {
  try {
    // Read with cat: Deno grants /proc only with --allow-all.
    const r = await new Deno.Command("cat", {
      args: [`/proc/${pid}/stat`],
      stdout: "piped",
      stderr: "null",
    })
      .output();
    if (!r.success) return NaN;
    const stat = new TextDecoder().decode(r.stdout);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (100/s)
  } catch {
    return NaN;
  }
}

function record(into: Map<string, Map<string, number[]>>, row: string, col: string, x: number) {
  const cells = into.get(row) ?? new Map<string, number[]>();
  cells.set(col, [...(cells.get(col) ?? []), x]);
  into.set(row, cells);
}

async function rssKiB(pid: number): Promise<number> {
  const r = await new Deno.Command("ps", {
    args: ["-o", "rss=", "-p", String(pid)],
    stdout: "piped",
  }).output();
  return Number(new TextDecoder().decode(r.stdout).trim());
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

await runMain(async () => {
  if (!has("cc")) throw new Error("the benchmark needs a C compiler (cc) for its load generator");
  const dir = await Deno.makeTempDir({ prefix: "socket-bench-" });
  try {
    const gen = await compile(dir, "loadgen");
    const epoll = await compile(dir, "epoll_server");
    const deno = Deno.execPath();
    const servers: Server[] = [
      {
        name: "deno select",
        argv: [deno, ...taskCommand("socket_server_with_select"), "--port", "0", "--quiet"],
      },
      {
        name: "deno threads",
        argv: [deno, ...taskCommand("socket_server_threads"), "--port", "0", "--quiet"],
      },
    ];
    if (args.baseline !== undefined) {
      const tree = await checkout(dir, args.baseline);
      const tasks = JSON.parse(await Deno.readTextFile(`${tree}/deno.json`)).tasks;
      const task = (name: string) => (tasks[name].command as string).split(/\s+/).slice(1);
      for (const [name, script] of [["select", "with_select"], ["threads", "threads"]]) {
        servers.push({
          name: `${name} @${args.baseline}`,
          argv: [deno, ...task(`socket_server_${script}`), "--port", "0", "--quiet"],
          cwd: tree,
        });
      }
    }
    if (has("node")) {
      servers.push({ name: "node net", argv: ["node", "bench/node_server.mjs", "0"] });
    }
    if (has("python3")) {
      servers.push({ name: "python selectors", argv: ["python3", "bench/python_server.py", "0"] });
    }
    servers.push({ name: "C epoll", argv: [epoll, "0"] });
    // What a second thread can gain on this machine at all (the threads target).
    servers.push({ name: "C epoll 2 threads", argv: [epoll, "0", "2"] });

    const s = args.seconds;
    const scenarios = [
      {
        name: "ping-pong, 64 clients (replies/s)",
        run: (p: number) => loadgen(gen, "pingpong", "127.0.0.1", p, 64, s, 64),
        key: "replies_per_s",
        higher: true,
        replies: (r: Record<string, number>) => r.replies_per_s * s,
      },
      {
        name: "one client, median round trip (µs)",
        run: (p: number) => loadgen(gen, "pingpong", "127.0.0.1", p, 1, s, 64),
        key: "median_rtt_us",
        higher: false,
      },
      {
        name: "pipelined 64-byte lines (MB/s)",
        run: (p: number) => loadgen(gen, "pipeline", "127.0.0.1", p, s, 64),
        key: "mb_per_s",
        higher: true,
        replies: (r: Record<string, number>) => r.replies,
      },
      {
        name: "pipelined 1 KiB lines (MB/s)",
        run: (p: number) => loadgen(gen, "pipeline", "127.0.0.1", p, s, 1024),
        key: "mb_per_s",
        higher: true,
        replies: (r: Record<string, number>) => r.replies,
      },
      {
        // Fairness: 100 clients keep their sockets full of 64-byte lines
        // while a probe asks every 10 ms; its slowest answer.
        name: "probe's worst round trip, 100 flooding (ms)",
        run: (p: number) => loadgen(gen, "flood", "127.0.0.1", p, 100, s, 64),
        key: "probe_max_ms",
        higher: false,
      },
    ];
    const results = new Map<string, Map<string, number[]>>();
    // Server CPU time per reply: steadier than throughput on a shared machine,
    // where other tenants take the CPU in bursts.
    const cpuCost = new Map<string, Map<string, number[]>>();
    console.log(
      `${servers.length} servers, ${args.rounds} round(s) of ${s} s, alternating; medians below.`,
    );
    for (const server of servers) await start(server);
    try {
      // Warm up every server (JIT, buffers) before anything is measured.
      for (const server of servers) {
        for (const scenario of scenarios) {
          await scenario.run(server.port!).catch((err) => {
            throw new Error(`${server.name}: ${err.message}`);
          });
        }
      }
      for (let round = 0; round < args.rounds; round++) {
        for (const scenario of scenarios) {
          // Alternate the order each round so no server always goes first.
          const order = round % 2 === 0 ? servers : [...servers].reverse();
          for (const server of order) {
            const cpuBefore = await cpuSeconds(server.process!.pid);
            const r = await scenario.run(server.port!).catch((err) => {
              throw new Error(`${server.name}: ${err.message}`);
            });
            const cpu = (await cpuSeconds(server.process!.pid)) - cpuBefore;
            record(results, scenario.name, server.name, r[scenario.key]);
            if (scenario.replies && !Number.isNaN(cpu)) {
              record(cpuCost, scenario.name, server.name, (cpu * 1e6) / scenario.replies(r));
            }
          }
        }
        console.log(`round ${round + 1}/${args.rounds} done`);
      }
    } finally {
      for (const server of servers) await server.process?.stop();
    }

    // Memory: RSS growth per idle client, each server started fresh, measured
    // once all its clients are connected and again after they have been held
    // idle for --hold seconds: V8 (Deno and Node alike) gives back the garbage
    // of the connection burst only after some 30 s of quiet. All servers hold
    // their clients at once, so the wait is paid once.
    const memory = new Map<string, { connected: number; held: number }>();
    if (args.idle > 0) {
      const holding: {
        server: Server;
        before: number;
        connected: number;
        stop: () => Promise<void>;
      }[] = [];
      try {
        for (const server of servers) {
          await start(server);
          const before = await rssKiB(server.process!.pid);
          const child = new Deno.Command(gen, {
            args: ["idle", "127.0.0.1", String(server.port), String(args.idle)],
            stdin: "piped",
            stdout: "piped",
            stderr: "piped",
          }).spawn();
          const out = new Output(child.stdout);
          const stop = async () => {
            await child.stdin.close();
            const status = await child.status;
            await out.done;
            await child.stderr.cancel();
            if (!status.success) {
              throw new Error(`${server.name}: not every idle client was answered`);
            }
          };
          holding.push({ server, before, connected: 0, stop });
          await out.waitFor("ready", 120_000);
          holding.at(-1)!.connected = await rssKiB(server.process!.pid);
        }
        await new Promise((resolve) => setTimeout(resolve, args.hold * 1000));
        for (const h of holding) {
          const held = await rssKiB(h.server.process!.pid);
          memory.set(h.server.name, {
            connected: (h.connected - h.before) / args.idle,
            held: (held - h.before) / args.idle,
          });
        }
        for (const h of holding) await h.stop(); // each client is served once more
      } finally {
        for (const server of servers) await server.process?.stop();
      }
    }

    printTable(servers.map((x) => x.name), scenarios, results, memory, cpuCost);
  } finally {
    if (args.baseline !== undefined) {
      await new Deno.Command("git", {
        args: ["-C", ROOT, "worktree", "remove", "--force", `${dir}/baseline`],
        stderr: "null",
      }).output();
    }
    await Deno.remove(dir, { recursive: true });
  }
});

/** Checks out git commit `ref` of this project into a worktree under `dir`. */
async function checkout(dir: string, ref: string): Promise<string> {
  const tree = `${dir}/baseline`;
  const r = await new Deno.Command("git", {
    args: ["-C", ROOT, "worktree", "add", "--detach", tree, ref],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!r.success) throw new Error(`git worktree add ${ref}: ${new TextDecoder().decode(r.stderr)}`);
  return tree;
}

function printTable(
  names: string[],
  scenarios: { name: string; higher: boolean }[],
  results: Map<string, Map<string, number[]>>,
  memory: Map<string, { connected: number; held: number }>,
  cpuCost: Map<string, Map<string, number[]>>,
) {
  const fmt = (x: number | undefined) =>
    x === undefined ? "-" : x >= 100 ? Math.round(x).toLocaleString("en") : x.toFixed(1);
  const width = 44;
  const cols = names.map((n) => n.padStart(19)).join("");
  console.log(`\n${"".padEnd(width)}${cols}`);
  const medians = new Map<string, Map<string, number>>();
  for (const sc of scenarios) {
    const row = new Map([...results.get(sc.name)!].map(([k, v]) => [k, median(v)]));
    medians.set(sc.name, row);
    console.log(
      `${sc.name.padEnd(width)}${names.map((n) => fmt(row.get(n)).padStart(19)).join("")}`,
    );
  }
  if (memory.size) {
    for (
      const [label, key] of [["connected", "connected"], [`held ${args.hold} s`, "held"]] as const
    ) {
      console.log(
        `${`idle client KiB (${args.idle}), ${label}`.padEnd(width)}${
          names.map((n) => fmt(memory.get(n)?.[key]).padStart(19)).join("")
        }`,
      );
    }
  }

  if (cpuCost.size) {
    console.log(`\nServer CPU time per reply, µs (lower is better)`);
    for (const [sc, row] of cpuCost) {
      console.log(
        `${sc.replace(/ \(.*\)$/, "").padEnd(width)}${
          names.map((n) => {
            const xs = row.get(n);
            return (xs ? median(xs).toFixed(2) : "-").padStart(19);
          }).join("")
        }`,
      );
    }
  }

  console.log("\nRatios (ours / peer; for round trip and memory, lower is better):");
  const ratio = (sc: string, a: string, b: string) => {
    const x = medians.get(sc)?.get(a), y = medians.get(sc)?.get(b);
    return x === undefined || y === undefined ? undefined : x / y;
  };
  const targets: [string, string, string, number, boolean][] = [
    ["ping-pong, 64 clients (replies/s)", "deno select", "node net", 1.2, true],
    ["ping-pong, 64 clients (replies/s)", "deno threads", "deno select", 1.2, true],
    ["pipelined 64-byte lines (MB/s)", "deno select", "node net", 1.5, true],
    ["pipelined 1 KiB lines (MB/s)", "deno select", "node net", 1.2, true],
    ["one client, median round trip (µs)", "deno select", "node net", 1.1, false],
  ];
  for (const [sc, a, b, target, higher] of targets) {
    const r = ratio(sc, a, b);
    if (r === undefined) continue;
    const met = higher ? r >= target : r <= target;
    console.log(
      `  ${sc}: ${a} / ${b} = ${r.toFixed(2)}× (target ${higher ? "≥" : "≤"} ${target}×) ${
        met ? "met" : "NOT met"
      }`,
    );
  }
  const c2 = ratio("ping-pong, 64 clients (replies/s)", "C epoll 2 threads", "C epoll");
  if (c2 !== undefined) {
    console.log(
      `  ping-pong, 64 clients (replies/s): C epoll 2 threads / C epoll = ${
        c2.toFixed(2)
      }× (what a second thread gains here)`,
    );
  }
  for (const sc of scenarios) {
    for (const peer of ["python selectors", "C epoll"]) {
      const r = ratio(sc.name, "deno select", peer);
      if (r !== undefined) console.log(`  ${sc.name}: deno select / ${peer} = ${r.toFixed(2)}×`);
    }
  }
  for (const name of names.filter((n) => n.includes(" @"))) {
    const ours = `deno ${name.split(" @")[0]}`;
    for (const sc of scenarios) {
      const r = ratio(sc.name, ours, name);
      if (r !== undefined) console.log(`  ${sc.name}: ${ours} / ${name} = ${r.toFixed(2)}×`);
    }
  }
  const mem = memory.get("deno select")?.held;
  if (mem !== undefined) {
    console.log(
      `  idle memory: deno select ${mem.toFixed(1)} KiB per client held idle (target ≤ 8 KiB) ${
        mem <= 8 ? "met" : "NOT met"
      }`,
    );
  }
}
