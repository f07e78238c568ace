/**
 * bench/run.ts — `deno task bench`: our line servers against peers, measured
 * in the same run by the same native load generator, alternating, medians.
 *
 * Servers: socket_server_with_select.ts and socket_server_threads.ts (ours),
 * a Node `net` line server and a Python `selectors` line server (the peers),
 * and a C epoll server (the ceiling: it shows the load generator is not the
 * bottleneck), also run with 2 threads on SO_REUSEPORT listeners (what a
 * second thread can gain on this machine, where the load generator shares
 * the cores). sensor_server.ts (it answers `pong`) joins the flood and
 * memory rows. The load generators and the C server are compiled here with
 * `cc -O2` (bench/loadgen.c, bench/flood.c, bench/epoll_server.c). Peers
 * that are not installed are skipped.
 *
 * Fairness under a flood (bench/flood.c): 100 clients load a server while a
 * probe, one more client, sends a line every 200 ms and times its reply. Two
 * shapes of load, because a rule that holds for one can fail the other:
 * open loop (each flooder writes whenever its socket takes bytes, and reads
 * and discards) and closed loop (each sends 64 KiB of lines, reads every
 * reply, repeats).
 *
 * `--baseline REF` (repeatable) also runs our servers as they were at git
 * commit REF (checked out in a temporary worktree), side by side with
 * today's, so a change is judged against the code before it in the same run.
 *
 * Run:
 *   deno run --allow-run --allow-read --allow-write bench/run.ts
 *   deno task bench          (same thing; --rounds 1 --seconds 0.5 for a quick look)
 *
 * @module
 */

import { parseCli, runMain } from "../lib/cli.ts";
import { Output, ROOT, taskCommand } from "../scripts/demo/processes.ts";

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
      kind: "strings",
      valueName: "REF",
      help: "also run our servers as of this git commit, side by side (repeatable)",
    },
    only: {
      kind: "string",
      valueName: "TEXT",
      help: "run only the rows and memory tests whose name contains TEXT (e.g. flood, '60 KB')",
    },
    "flood-seconds": {
      kind: "seconds",
      default: 5,
      help: "length of each flood run (the probe starts at 0.5 s, then every 200 ms)",
    },
    burst: {
      kind: "integer",
      min: 0,
      default: 1000,
      help: "clients that each send one 60,000-byte line, for the memory test (0: skip)",
    },
  },
});

interface Server {
  name: string;
  argv: [string, ...string[]];
  cwd?: string;
  /** Answers `pong` to every line (sensor_server): only the flood and memory rows. */
  pong?: boolean;
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

/**
 * sensor_server's defaults would spoil the memory test: --max-conns (1,000) turns most of the
 * idle clients away, and --idle-timeout (60 s) drops them before they are measured (a server
 * started first holds its clients while the others connect theirs, then 35 s more).
 */
const SENSOR_FLAGS = ["--max-conns", "20000", "--idle-timeout", "600"];

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
    const flood = await compile(dir, "flood");
    const servers: Server[] = [
      {
        name: "deno select",
        argv: [deno, ...taskCommand("socket_server_with_select"), "--port", "0", "--quiet"],
      },
      {
        name: "deno threads",
        argv: [deno, ...taskCommand("socket_server_threads"), "--port", "0", "--quiet"],
      },
      {
        name: "deno sensor",
        argv: [deno, ...taskCommand("sensor_server"), "--port", "0", "--quiet", ...SENSOR_FLAGS],
        pong: true,
      },
    ];
    for (const ref of args.baseline) {
      const tree = await checkout(dir, ref);
      const tasks = JSON.parse(await Deno.readTextFile(`${tree}/deno.json`)).tasks;
      const task = (name: string) => (tasks[name].command as string).split(/\s+/).slice(1);
      for (
        const [name, script] of [
          ["select", "socket_server_with_select"],
          ["threads", "socket_server_threads"],
          ["sensor", "sensor_server"],
        ]
      ) {
        servers.push({
          name: `${name} @${ref}`,
          argv: [
            deno,
            ...task(script),
            ...["--port", "0", "--quiet"],
            ...(name === "sensor" ? SENSOR_FLAGS : []),
          ],
          cwd: tree,
          pong: name === "sensor",
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
    const floodRun = (shape: "open" | "closed") => (server: Server) =>
      loadgen(flood, shape, server.port!, 100, args["flood-seconds"], server.pong ? "pong" : "ok");
    const floodRows = (shape: string) => [
      { key: "median_ms", label: `${shape} flood, 100 clients: probe median (ms)`, higher: false },
      { key: "worst_ms", label: `${shape} flood, 100 clients: probe worst (ms)`, higher: false },
      { key: "flood_MBps", label: `${shape} flood, 100 clients: replies (MB/s)`, higher: true },
    ];
    const allScenarios: Scenario[] = [
      {
        run: (x) => loadgen(gen, "pingpong", "127.0.0.1", x.port!, 64, s, 64),
        rows: [{ key: "replies_per_s", label: "ping-pong, 64 clients (replies/s)", higher: true }],
        replies: (r) => r.replies_per_s * s,
      },
      {
        // Replies over 256 bytes: each borrows a buffer from ReplyBatch's pool while it is written.
        run: (x) => loadgen(gen, "pingpong", "127.0.0.1", x.port!, 64, s, 300),
        rows: [{
          key: "replies_per_s",
          label: "ping-pong, 64 clients, 300-byte lines (replies/s)",
          higher: true,
        }],
        replies: (r) => r.replies_per_s * s,
      },
      {
        run: (x) => loadgen(gen, "pingpong", "127.0.0.1", x.port!, 1, s, 64),
        rows: [{
          key: "median_rtt_us",
          label: "one client, median round trip (µs)",
          higher: false,
        }],
      },
      {
        run: (x) => loadgen(gen, "pipeline", "127.0.0.1", x.port!, s, 64),
        rows: [{ key: "mb_per_s", label: "pipelined 64-byte lines (MB/s)", higher: true }],
        replies: (r) => r.replies,
      },
      {
        run: (x) => loadgen(gen, "pipeline", "127.0.0.1", x.port!, s, 1024),
        rows: [{ key: "mb_per_s", label: "pipelined 1 KiB lines (MB/s)", higher: true }],
        replies: (r) => r.replies,
      },
      { run: floodRun("closed"), rows: floodRows("closed"), pong: true },
      { run: floodRun("open"), rows: floodRows("open"), pong: true },
    ];
    const scenarios = allScenarios.filter((sc) =>
      args.only === undefined || sc.rows.some((r) => r.label.includes(args.only!))
    );
    const takes = (sc: Scenario, server: Server) => !server.pong || sc.pong === true;
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
        for (const scenario of scenarios.filter((sc) => takes(sc, server))) {
          await scenario.run(server).catch((err) => {
            throw new Error(`${server.name}: ${err.message}`);
          });
        }
      }
      for (let round = 0; round < args.rounds; round++) {
        for (const scenario of scenarios) {
          // Alternate the order each round so no server always goes first.
          const order = round % 2 === 0 ? servers : [...servers].reverse();
          for (const server of order.filter((x) => takes(scenario, x))) {
            const cpuBefore = await cpuSeconds(server.process!.pid);
            const r = await scenario.run(server).catch((err) => {
              throw new Error(`${server.name}: ${err.message}`);
            });
            const cpu = (await cpuSeconds(server.process!.pid)) - cpuBefore;
            for (const row of scenario.rows) record(results, row.label, server.name, r[row.key]);
            if (scenario.replies && !Number.isNaN(cpu)) {
              const label = scenario.rows[0].label;
              record(cpuCost, label, server.name, (cpu * 1e6) / scenario.replies(r));
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
    // of the connection burst only after some 30 s of quiet. Two loads, each
    // on its own fresh servers, held at once so the wait is paid once:
    // --idle clients that sent one short line, and --burst clients that each
    // sent one 60,000-byte line (a burst must not leave its buffers behind).
    const memory = new Map<string, Map<string, { connected: number; held: number }>>();
    const loads = [
      { label: `idle client KiB (${args.idle})`, clients: args.idle, lineBytes: 0 },
      { label: `after a 60 KB line, KiB (${args.burst})`, clients: args.burst, lineBytes: 60_000 },
    ].filter((l) => l.clients > 0 && (args.only === undefined || l.label.includes(args.only)));
    if (loads.length > 0) {
      const holding: {
        load: (typeof loads)[number];
        server: Server;
        before: number;
        connected: number;
        stop: () => Promise<void>;
      }[] = [];
      const fresh: Server[] = [];
      try {
        for (const load of loads) {
          for (const template of servers) {
            const server: Server = { ...template, process: undefined, port: undefined };
            fresh.push(server);
            await start(server);
            const before = await rssKiB(server.process!.pid);
            const child = new Deno.Command(gen, {
              args: ["idle", "127.0.0.1", String(server.port), String(load.clients)]
                .concat(load.lineBytes ? [String(load.lineBytes)] : []),
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
                console.log(`${server.name}: not every idle client was answered`);
              }
            };
            try {
              await out.waitFor("ready", 120_000);
            } catch (err) {
              // One server that fails its clients costs its own cells, not the whole table.
              console.log(`${server.name}, ${load.label}: ${(err as Error).message}`);
              await stop();
              continue;
            }
            holding.push({ load, server, before, connected: 0, stop });
            holding.at(-1)!.connected = await rssKiB(server.process!.pid);
          }
        }
        await new Promise((resolve) => setTimeout(resolve, args.hold * 1000));
        for (const h of holding) {
          const held = await rssKiB(h.server.process!.pid);
          const row = memory.get(h.load.label) ?? new Map();
          row.set(h.server.name, {
            connected: (h.connected - h.before) / h.load.clients,
            held: (held - h.before) / h.load.clients,
          });
          memory.set(h.load.label, row);
        }
        for (const h of holding) await h.stop(); // each client is served once more
      } finally {
        for (const server of fresh) await server.process?.stop();
      }
    }

    printTable(servers.map((x) => x.name), scenarios, results, memory, cpuCost);
  } finally {
    for (const ref of args.baseline) {
      await new Deno.Command("git", {
        args: ["-C", ROOT, "worktree", "remove", "--force", `${dir}/baseline-${ref}`],
        stderr: "null",
      }).output();
    }
    await Deno.remove(dir, { recursive: true });
  }
});

/** One kind of load: how to run it against a server, and the rows it fills. */
interface Scenario {
  run: (server: Server) => Promise<Record<string, number>>;
  rows: { key: string; label: string; higher: boolean }[];
  /** The replies a run got, for the CPU time per reply. */
  replies?: (r: Record<string, number>) => number;
  /** sensor_server (which answers `pong`) takes this load too. */
  pong?: boolean;
}

/** Checks out git commit `ref` of this project into a worktree under `dir`. */
async function checkout(dir: string, ref: string): Promise<string> {
  const tree = `${dir}/baseline-${ref}`;
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
  scenarios: Scenario[],
  results: Map<string, Map<string, number[]>>,
  memory: Map<string, Map<string, { connected: number; held: number }>>,
  cpuCost: Map<string, Map<string, number[]>>,
) {
  const fmt = (x: number | undefined) =>
    x === undefined ? "-" : x >= 100 ? Math.round(x).toLocaleString("en") : x.toFixed(1);
  const medians = new Map<string, Map<string, number>>();
  for (const [label, row] of results) {
    medians.set(label, new Map([...row].map(([k, v]) => [k, median(v)])));
  }
  for (const [label, row] of memory) {
    medians.set(`${label}, connected`, new Map([...row].map(([k, v]) => [k, v.connected])));
    medians.set(`${label}, held ${args.hold} s`, new Map([...row].map(([k, v]) => [k, v.held])));
  }
  for (const [label, row] of cpuCost) {
    medians.set(`CPU µs per reply: ${label}`, new Map([...row].map(([k, v]) => [k, median(v)])));
  }
  // One table per kind of load: a row per server, a column per measure.
  const table = (title: string, columns: [label: string, header: string][]) => {
    const shown = columns.filter(([label]) => medians.has(label));
    if (shown.length === 0) return;
    console.log(`\n${title}`);
    console.log(`${"".padEnd(22)}${shown.map(([, h]) => h.padStart(14)).join("")}`);
    for (const name of names) {
      const cells = shown.map(([label]) => medians.get(label)!.get(name));
      if (cells.every((c) => c === undefined)) continue;
      console.log(`${name.padEnd(22)}${cells.map((c) => fmt(c).padStart(14)).join("")}`);
    }
  };
  table("Throughput and round trip (higher is better, but for the round trip)", [
    ["ping-pong, 64 clients (replies/s)", "64 ping-pong/s"],
    ["one client, median round trip (µs)", "1 client RTT µs"],
    ["pipelined 64-byte lines (MB/s)", "pipe 64 B MB/s"],
    ["pipelined 1 KiB lines (MB/s)", "pipe 1 KiB MB/s"],
  ]);
  const flood = (shape: string) =>
    [
      [`${shape} flood, 100 clients: probe median (ms)`, `${shape} median`],
      [`${shape} flood, 100 clients: probe worst (ms)`, `${shape} worst`],
      [`${shape} flood, 100 clients: replies (MB/s)`, `${shape} MB/s`],
    ] as [string, string][];
  table(
    "100 clients flood while a probe times one line every 200 ms (probe in ms, lower is better)",
    [...flood("closed"), ...flood("open")],
  );
  table(`Memory per client, KiB (lower is better)`, [
    ...[...memory.keys()].flatMap((label) =>
      [
        [`${label}, connected`, label.startsWith("idle") ? "idle, conn." : "burst, conn."],
        [`${label}, held ${args.hold} s`, label.startsWith("idle") ? "idle, held" : "burst, held"],
      ] as [string, string][]
    ),
  ]);
  table("Server CPU time per reply, µs (lower is better)", [
    ["CPU µs per reply: ping-pong, 64 clients (replies/s)", "64 ping-pong"],
    ["CPU µs per reply: pipelined 64-byte lines (MB/s)", "pipe 64 B"],
    ["CPU µs per reply: pipelined 1 KiB lines (MB/s)", "pipe 1 KiB"],
  ]);

  console.log("\nRatios (ours / peer; for round trip, probe and memory, lower is better):");
  const ratio = (label: string, a: string, b: string) => {
    const x = medians.get(label)?.get(a), y = medians.get(label)?.get(b);
    return x === undefined || y === undefined ? undefined : x / y;
  };
  const targets: [string, string, string, number, boolean][] = [
    ["ping-pong, 64 clients (replies/s)", "deno select", "node net", 1.2, true],
    ["ping-pong, 64 clients (replies/s)", "deno threads", "deno select", 1.2, true],
    ["pipelined 64-byte lines (MB/s)", "deno select", "node net", 1.5, true],
    ["pipelined 1 KiB lines (MB/s)", "deno select", "node net", 1.2, true],
    ["one client, median round trip (µs)", "deno select", "node net", 1.1, false],
  ];
  for (const [label, a, b, target, higher] of targets) {
    const r = ratio(label, a, b);
    if (r === undefined) continue;
    const met = higher ? r >= target : r <= target;
    console.log(
      `  ${label}: ${a} / ${b} = ${r.toFixed(2)}× (target ${higher ? "≥" : "≤"} ${target}×) ${
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
    for (const { label } of sc.rows) {
      for (const peer of ["python selectors", "C epoll"]) {
        const r = ratio(label, "deno select", peer);
        if (r !== undefined) console.log(`  ${label}: deno select / ${peer} = ${r.toFixed(2)}×`);
      }
    }
  }
  for (const name of names.filter((n) => n.includes(" @"))) {
    const ours = `deno ${name.split(" @")[0]}`;
    for (const label of medians.keys()) {
      const r = ratio(label, ours, name);
      if (r !== undefined) console.log(`  ${label}: ${ours} / ${name} = ${r.toFixed(2)}×`);
    }
  }
  // The bounds the servers are held to (issue: servers under load).
  const bound = (what: string, x: number | undefined, limit: number, unit: string) => {
    if (x === undefined) return;
    console.log(
      `  ${what}: ${fmt(x)} ${unit} (target ≤ ${limit} ${unit}) ${x <= limit ? "met" : "NOT met"}`,
    );
  };
  for (const name of ["deno select", "deno threads", "deno sensor"]) {
    for (const shape of ["closed", "open"]) {
      const label = `${shape} flood, 100 clients: probe worst (ms)`;
      bound(`${name}, ${shape} flood: probe worst`, medians.get(label)?.get(name), 150, "ms");
    }
    for (const label of memory.keys()) {
      const held = memory.get(label)?.get(name)?.held;
      const limit = label.startsWith("idle") ? 8.5 : 20;
      bound(`${name}, ${label}, held ${args.hold} s`, held, limit, "KiB");
    }
  }
}
