/**
 * bench/proxy_bench.ts — what scripts/tcp_proxy.ts costs: the same upload,
 * `--mib` MiB from a client to a sink that counts them, straight to the sink
 * and through the proxy, in the same run. Runs alternate (direct, proxy,
 * direct, ...) so that a noisy neighbour hurts both alike; the medians and
 * their ratio are printed, with the proxy's CPU time per MiB on Linux. The
 * sink is a Deno process of its own (`deno eval`), the proxy another, the
 * client this one.
 *
 * Run:
 *   deno run --allow-run --allow-read --allow-net=127.0.0.1 bench/proxy_bench.ts
 *   deno task bench:proxy --mib 64 --rounds 1      (a quick look)
 *
 * @module
 */

import { parseCli, runMain } from "../lib/cli.ts";
import { writeAll } from "../lib/io.ts";
import { Output, ROOT, taskCommand } from "../scripts/demo/processes.ts";

const args = parseCli({
  name: "proxy_bench",
  summary: "Throughput through tcp_proxy against a direct connection, alternating, medians.",
  options: {
    mib: { kind: "integer", min: 1, max: 16_384, default: 1024, help: "MiB sent per run" },
    rounds: { kind: "integer", min: 1, max: 20, default: 5, help: "runs each way (median)" },
  },
});

const MiB = 1024 * 1024;

/** The sink: reads each connection to its end, then answers the count as one line, and closes. */
const SINK = `
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log("listening on 127.0.0.1:" + listener.addr.port);
const buf = new Uint8Array(256 * 1024);
for await (const conn of listener) {
  (async () => {
    let total = 0;
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) total += n;
    const line = new TextEncoder().encode(total + "\\n");
    for (let at = 0; at < line.length;) at += await conn.write(line.subarray(at));
    conn.close();
  })().catch(() => {});
}
`;

interface Proc {
  pid: number;
  port: number;
  stop: () => Promise<void>;
}

async function start(argv: string[]): Promise<Proc> {
  const child = new Deno.Command(Deno.execPath(), {
    args: argv,
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
  return { pid: child.pid, port: Number(port), stop };
}

/** The CPU time (user + system) of a process so far, in seconds (Linux; else NaN). */
function cpuSeconds(pid: number): number {
  if (Deno.build.os !== "linux") return NaN;
  // Read with cat: Deno grants /proc only with --allow-all.
  const out = new Deno.Command("cat", { args: [`/proc/${pid}/stat`] }).outputSync();
  const stat = new TextDecoder().decode(out.stdout);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // clock ticks of 10 ms
}

/** Sends `--mib` MiB to `port`, half-closes, waits for the sink's count; MiB/s. */
async function upload(port: number): Promise<number> {
  const chunk = new Uint8Array(256 * 1024).fill(0x5a);
  const total = args.mib * MiB;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const t0 = performance.now();
    for (let sent = 0; sent < total; sent += chunk.length) await writeAll(conn, chunk);
    await conn.closeWrite();
    const reply = new Uint8Array(64);
    let got = "";
    for (let i = 0; i < 64 && !got.endsWith("\n"); i++) { // a short line: a few reads at most
      const n = await conn.read(reply);
      if (n === null) break;
      got += new TextDecoder().decode(reply.subarray(0, n));
    }
    const seconds = (performance.now() - t0) / 1000;
    if (Number(got) !== total) throw new Error(`the sink counted ${got.trim()} of ${total} bytes`);
    return args.mib / seconds;
  } finally {
    conn.close();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (x: number) => Math.round(x).toLocaleString("en-US");

await runMain(async () => {
  const sink = await start(["eval", SINK]);
  const proxy = await start([
    ...taskCommand("tcp_proxy"),
    ...["--port", "0", "--quiet", "--to", `127.0.0.1:${sink.port}`],
  ]);
  try {
    console.log(
      `tcp_proxy bench: ${args.mib} MiB per run, client → sink, ` +
        `${args.rounds} run(s) each way, alternating`,
    );
    await upload(sink.port); // warm up both paths once (JIT, buffers)
    await upload(proxy.port);
    const direct: number[] = [];
    const proxied: number[] = [];
    let cpu = 0;
    for (let round = 0; round < args.rounds; round++) {
      direct.push(await upload(sink.port));
      const cpu0 = cpuSeconds(proxy.pid);
      proxied.push(await upload(proxy.port));
      cpu += cpuSeconds(proxy.pid) - cpu0;
      console.log(
        `  run ${round + 1}: direct ${fmt(direct.at(-1)!)} MiB/s, ` +
          `through the proxy ${fmt(proxied.at(-1)!)} MiB/s`,
      );
    }
    const [d, p] = [median(direct), median(proxied)];
    console.log(`direct           ${fmt(d).padStart(7)} MiB/s (median)`);
    console.log(`through proxy    ${fmt(p).padStart(7)} MiB/s (median)`);
    console.log(`proxy / direct = ${(p / d).toFixed(2)}×`);
    if (!Number.isNaN(cpu)) {
      const perGiB = cpu / (args.rounds * args.mib) * 1024;
      console.log(`proxy CPU time: ${perGiB.toFixed(2)} s per GiB relayed`);
    }
  } finally {
    await proxy.stop();
    await sink.stop();
  }
});
