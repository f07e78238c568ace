/**
 * Tests for scripts/tcp/prompt.ts: ask() answered from a pipe, in a child `deno eval`
 * (ask reads the process's own stdin, and a bad piped answer exits 2). The
 * terminal case (asked again) is left to a person: a test has no terminal.
 *
 * @module
 */

import assert from "node:assert/strict";

const PROMPT = new URL("../scripts/tcp/prompt.ts", import.meta.url).href;
const CLI = new URL("../lib/cli.ts", import.meta.url).href;

/** Asks for two ports in a child Deno whose stdin is `input`; prints what it got. */
async function askTwice(input: string) {
  const code = `
import { ask } from "${PROMPT}";
import { parsePort } from "${CLI}";
const first = await ask("demo", "Enter the local port: ", parsePort, "a port from 0 to 65535");
const second = await ask("demo", "And another: ", parsePort, "a port from 0 to 65535");
console.log(JSON.stringify([first, second]));
`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input)).catch(() => {}); // it may exit first
  await writer.close().catch(() => {});
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("ask reads piped answers a line each, and ends the prompt's line itself", async () => {
  const r = await askTwice("8888\r\n 0 \n");
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "Enter the local port: \nAnd another: \n[8888,0]\n");
});

Deno.test("ask from a pipe: a bad answer or no answer is a usage error (exit 2)", async () => {
  const [bad, none, short] = await Promise.all([
    askTwice("abc\n"),
    askTwice(""),
    askTwice("1\n"),
  ]);
  assert.equal(bad.code, 2);
  assert.equal(
    bad.stderr,
    "error: invalid answer 'abc': expected a port from 0 to 65535 (see demo --help)\n",
  );
  assert.equal(none.code, 2);
  assert.equal(
    none.stderr,
    "error: no answer to 'Enter the local port:' (stdin ended) (see demo --help)\n",
  );
  assert.equal(short.code, 2);
  assert.equal(short.stdout, "Enter the local port: \nAnd another: \n");
  assert.match(short.stderr, /no answer to 'And another:'/);
});

Deno.test("ask from a pipe: an answer over 4096 bytes is a usage error that names the question", async () => {
  const long = await askTwice("1".repeat(5000) + "\n");
  assert.equal(long.code, 2);
  assert.equal(
    long.stderr,
    "error: the answer to 'Enter the local port:' is longer than 4096 bytes (see demo --help)\n",
  );
});
