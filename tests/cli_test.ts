/**
 * Unit tests for lib/cli.ts: flags, validation, `--help`, and the one-line
 * `error:` with its exit code. What exits the process is run in a child
 * `deno eval`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseCli, parsePort, startHint } from "../lib/cli.ts";
import { lineServerFlags } from "../lib/many_clients.ts";
import { MAX_LINE_LIMIT } from "../lib/server.ts";

const CLI = new URL("../lib/cli.ts", import.meta.url).href;

/** Runs `code` (which may import the lib) in a child Deno with `args`; no colour. */
async function evaluate(code: string, args: string[] = []) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code, "--", ...args],
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A script's flags, parsed from Deno.args in the child. */
const SCRIPT = `
import { parseCli } from "${CLI}";
const args = parseCli({
  name: "demo_server",
  summary: "Answers lines.",
  options: {
    port: { kind: "port", short: "p", default: 8888, help: "TCP port" },
    timeout: { kind: "seconds", default: 10, help: "how long to wait" },
    count: { kind: "integer", min: 1, max: 5, default: 1, valueName: "N", help: "how many" },
  },
});
console.log(JSON.stringify(args));
`;

Deno.test("parseCli reads defaults, flags, repeatable values and IPv6 hosts", () => {
  const spec = {
    name: "t",
    summary: "test",
    options: {
      host: { kind: "host", default: "127.0.0.1", help: "h" },
      port: { kind: "port", short: "p", default: 8888, help: "p" },
      message: { kind: "strings", short: "m", help: "m" },
      timeout: { kind: "seconds", default: 10, help: "t" },
      forever: { kind: "boolean", help: "f" },
    },
  } as const;
  const a = parseCli({ ...spec, args: [] });
  assert.deepEqual(a, { host: "127.0.0.1", port: 8888, message: [], timeout: 10, forever: false });
  const b = parseCli({
    ...spec,
    args: ["--host", "[::1]", "-p", "0", "-m", "x", "-m", "y", "--timeout", "0.5", "--forever"],
  });
  assert.deepEqual(b, { host: "::1", port: 0, message: ["x", "y"], timeout: 0.5, forever: true });
});

Deno.test("parseCli: a flag without a default is undefined when absent", () => {
  const args = parseCli({
    name: "t",
    summary: "test",
    options: {
      name: { kind: "string", help: "n" },
      size: { kind: "integer", help: "s" },
    },
    args: ["--size=32"],
  });
  assert.deepEqual(args, { name: undefined, size: 32 });
});

Deno.test("parsePort accepts 0-65535 only", () => {
  assert.equal(parsePort("0"), 0);
  assert.equal(parsePort("65535"), 65535);
  assert.equal(parsePort(" 8888 "), 8888);
  for (const bad of ["abc", "70000", "-1", "1.5", "", "65536", "0x50", "1e3"]) {
    assert.equal(parsePort(bad), undefined, bad);
  }
});

Deno.test("parseCli takes operands (FILE...) only from a script that names them", () => {
  const options = { port: { kind: "port", default: 1, help: "p" } } as const;
  const args = ["a.txt", "--port", "2", "b c.bin"];
  const files = parseCli({ name: "x", summary: "s", options, operands: "FILE...", args });
  assert.deepEqual(files, { port: 2, operands: ["a.txt", "b c.bin"] });
  assert.deepEqual(parseCli({ name: "x", summary: "s", options, args: [] }), { port: 1 });
});

Deno.test("lineServerFlags: the flags every line server shares, with its own defaults", () => {
  const args = parseCli({
    name: "t",
    summary: "test",
    options: lineServerFlags(8889, 300),
    args: [],
  });
  assert.deepEqual(args, {
    host: "127.0.0.1",
    port: 8889,
    "idle-timeout": 300,
    "max-line": 65536,
    trace: false,
  });
  const set = parseCli({
    name: "t",
    summary: "test",
    options: lineServerFlags(8889, 300),
    args: ["--idle-timeout", "0", "--max-line", String(MAX_LINE_LIMIT), "-p", "0"],
  });
  assert.deepEqual([set["idle-timeout"], set["max-line"], set.port], [0, MAX_LINE_LIMIT, 0]);
  assert.equal(MAX_LINE_LIMIT, 16 * 1024 * 1024);
});

Deno.test("startHint names the port unless it is the server's default", () => {
  assert.equal(startHint("socket_server", 8888, 8888), "start it with deno task socket_server");
  assert.equal(
    startHint("socket_server", 9000, 8888),
    "start it with deno task socket_server --port 9000",
  );
  assert.equal(startHint("x", 1), "start it with deno task x --port 1");
});

Deno.test("parseCli in a script: --help exits 0, a bad value exits 2 with one error line", async () => {
  const [help, ok, negative, badPort, tooBig, unknown, missing, positional, fraction, flagAsValue] =
    await Promise.all([
      evaluate(SCRIPT, ["--help"]),
      evaluate(SCRIPT, ["-p", "0", "--timeout", ".5", "--count", "5"]),
      evaluate(SCRIPT, ["--port", "-1"]),
      evaluate(SCRIPT, ["--port", "abc"]),
      evaluate(SCRIPT, ["--timeout", "86401"]),
      evaluate(SCRIPT, ["--colour"]),
      evaluate(SCRIPT, ["--count"]),
      evaluate(SCRIPT, ["extra"]),
      evaluate(SCRIPT, ["--timeout", "-.5"]),
      evaluate(SCRIPT, ["--count", "--help"]),
    ]);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Answers lines\.\n\nUsage: demo_server \[options\]/);
  assert.match(help.stdout, /-p, --port PORT +TCP port \(default 8888\)/);
  assert.match(help.stdout, /--timeout SECONDS +how long to wait \(default 10, max 86400\)/);
  assert.match(help.stdout, /--count N +how many \(default 1, max 5\)/);
  assert.match(help.stdout, /-h, --help +show this help and exit/);

  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout), { port: 0, timeout: 0.5, count: 5 });

  const usage = (r: typeof ok, message: string) => {
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, `error: ${message} (see demo_server --help)\n`);
  };
  usage(negative, "invalid --port '-1': expected a number from 0 to 65535");
  usage(badPort, "invalid --port 'abc': expected a number from 0 to 65535");
  usage(tooBig, "invalid --timeout '86401': expected a number of seconds from 0 to 86400");
  usage(unknown, "unknown option --colour");
  usage(missing, "option --count needs a value");
  usage(positional, "unexpected argument extra");
  usage(fraction, "invalid --timeout '-.5': expected a number of seconds from 0 to 86400");
  usage(flagAsValue, "option --count needs a value");
});

Deno.test("runMain: a failure is one error line, exit 1 (2 for a usage CliError), no stack", async () => {
  const main = (body: string) =>
    `import { CliError, runMain } from "${CLI}";\n` +
    `await runMain(async () => { ${body} });\nconsole.log("after");`;
  const [refused, usage, escaped, fine] = await Promise.all([
    evaluate(main(`throw new Deno.errors.ConnectionRefused("Connection refused (os error 111)");`)),
    evaluate(main(`throw new CliError("bad answer", 2);`)),
    evaluate(main(`throw new Error("peer said \\x1b[2J");`)),
    evaluate(main(`console.log("ran");`)),
  ]);
  assert.deepEqual(
    [refused.code, refused.stderr],
    [1, "error: connection refused: is the server running?\n"],
  );
  assert.deepEqual([usage.code, usage.stderr], [2, "error: bad answer\n"]);
  // A peer's bytes in a message cannot drive the terminal.
  assert.deepEqual([escaped.code, escaped.stderr], [1, "error: peer said \\x1b[2J\n"]);
  assert.deepEqual([fine.code, fine.stdout, fine.stderr], [0, "ran\nafter\n", ""]);
});
