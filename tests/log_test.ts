/**
 * lib/log.ts in a real process, writing to a real pipe: while nobody reads
 * it, lines beyond 1 MiB are dropped and counted, and said once the pipe is
 * read again; while it is read, nothing is lost, in order. (The servers
 * under an unread log: tests/load_test.ts.)
 */
import assert from "node:assert/strict";
import { decoder, ROOT } from "./helpers.ts";

/** A child that logs `lines` lines of 100 bytes, 100 per turn of its event loop, as a busy server would. */
function logger(lines: number): Deno.ChildProcess {
  const code = `
    import { flushLogs, log } from "${ROOT}lib/log.ts";
    const pad = "x".repeat(88);
    for (let i = 0; i < ${lines}; i++) {
      log(\`line \${String(i).padStart(5, "0")} \${pad}\`);
      if (i % 100 === 99) await new Promise((r) => setTimeout(r, 0));
    }
    console.error("logged");
    await new Response(Deno.stdin.readable).arrayBuffer(); // until the test says go
    await flushLogs(10_000);
  `;
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function readUntil(stream: ReadableStream<Uint8Array>, text: string): Promise<void> {
  let seen = "";
  for await (const chunk of stream) {
    seen += decoder.decode(chunk);
    if (seen.includes(text)) return;
  }
  throw new Error(`no '${text}' in ${seen}`);
}

Deno.test("log: with nobody reading, lines past 1 MiB are dropped, and counted once the pipe is read", async () => {
  const child = logger(30_000); // 3 MB of log; the pipe holds 64 KiB, the queue 1 MiB
  await readUntil(child.stderr, "logged"); // stdout not read meanwhile
  await child.stdin.close();
  const out = (await new Response(child.stdout).text()).trimEnd().split("\n");
  assert.equal((await child.status).code, 0);
  const note = out.pop()!;
  const dropped = Number(
    note.match(/^\((\d+) log lines dropped: the output was not being read\)$/)?.[1],
  );
  assert.ok(dropped > 0, `last line: ${note}`);
  // What was kept is the first lines, whole and in order; the count covers the rest.
  assert.equal(out.length + dropped, 30_000);
  assert.ok(out.length * 100 > 1024 * 1024, `only ${out.length} lines kept`);
  out.forEach((line, i) => assert.ok(line.startsWith(`line ${String(i).padStart(5, "0")} `), line));
});

Deno.test("log: with the pipe read, every line arrives, in order, and nothing is said dropped", async () => {
  const child = logger(30_000);
  await child.stdin.close();
  const [text, status] = await Promise.all([new Response(child.stdout).text(), child.status]);
  await child.stderr.cancel();
  assert.equal(status.code, 0);
  const out = text.trimEnd().split("\n");
  assert.equal(out.length, 30_000);
  out.forEach((line, i) => assert.ok(line.startsWith(`line ${String(i).padStart(5, "0")} `), line));
});
