/**
 * The rules the clients share, each test looping over every client it holds
 * for (a test about one client is in its pair's file): a --message is one
 * line; a server's control bytes and invalid UTF-8 are printed escaped; an
 * IPv6 peer is written `[::1]:PORT`; a refused connection says what to do,
 * on the port it tried; numeric flags past their maximum are usage errors.
 * The servers here are stand-ins (Deno), not ours.
 */
import assert from "node:assert/strict";
import { answering, denoPeer, encoder, freePort, runTask } from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

/** What a raw control byte looks like in output: ESC, BEL, CR, or a byte that is not UTF-8. */
// deno-lint-ignore no-control-regex
const RAW_CONTROL = /[\x1b\x07\r\ufffd]/;

/** A reply meant to retitle the window, clear the screen and overwrite a line. */
const HOSTILE = "\x1b]0;pwned\x07\x1b[2Jfake\rline";
const HOSTILE_SHOWN = String.raw`\x1b]0;pwned\x07\x1b[2Jfake\rline\xff`;
const hostileBytes = (prefix: string) =>
  new Uint8Array([...encoder.encode(prefix + HOSTILE), 0xff, 0x0a]);

Deno.test("socket_client: a --message with a newline or CR is a usage error, nothing sent", async () => {
  for (const m of ["one\ntwo", "one\rtwo"]) {
    const r = await runTask("socket_client", ["-p", String(freePort()), "-m", m, "-m", "three"]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stdout, "");
    assert.match(
      r.stderr,
      /^error: --message 'one\\[nr]two' holds a line break: .*\(see socket_client --help\)\n$/,
    );
  }
  for (const task of ["hello_client", "basic_client"]) {
    const r = await runTask(task, ["-p", String(freePort()), "-m", "a\nb"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^error: --message must be one line.*\\(see ${task} --help\\)\\n$`),
    );
  }
});

Deno.test("socket_client, hello_client, basic_client, sensor_client print a server's control bytes escaped", async () => {
  const socketPeer = denoPeer(answering(() => hostileBytes("OK ... ")));
  const socket = await runTask("socket_client", ["-p", socketPeer.port, "-m", "x"]);
  await socketPeer.done;
  assert.equal(socket.code, 0, socket.stderr);
  assert.equal(socket.stdout, `OK ... ${HOSTILE_SHOWN}\n`);

  const helloPeer = denoPeer(async (conn, lines) => {
    await writeAll(conn, hostileBytes("Hello "));
    await lines.readLine();
  });
  const hello = await runTask("hello_client", ["-p", helloPeer.port]);
  await helloPeer.done;
  assert.equal(hello.code, 0, hello.stderr);
  assert.equal(hello.stdout, `Server: Hello ${HOSTILE_SHOWN}\n`);

  const basicPeer = denoPeer(async (conn, lines) => {
    await lines.readLine();
    await writeAll(conn, hostileBytes("Message received: "));
  });
  const basic = await runTask("basic_client", ["-p", basicPeer.port]);
  await basicPeer.done;
  assert.equal(basic.code, 0, basic.stderr);
  assert.equal(basic.stdout, `Response from the server: Message received: ${HOSTILE_SHOWN}\n`);

  const sensorPeer = denoPeer(answering(() => hostileBytes("pong")));
  const sensor = await runTask("sensor_client", [
    ...["-p", sensorPeer.port, "--count", "1", "--interval", "0.05", "--timeout", "5"],
  ]);
  await sensorPeer.done;
  assert.equal(sensor.code, 0, sensor.stderr);
  assert.match(
    sensor.stdout,
    /102\) \| Received: pong\\x1b\]0;pwned\\x07\\x1b\[2Jfake\\rline\\xff \|/,
  );

  for (const r of [socket, hello, basic, sensor]) {
    assert.doesNotMatch(r.stdout + r.stderr, RAW_CONTROL);
  }
});

Deno.test("clients write an IPv6 peer as [::1]:PORT", async () => {
  const socketPeer = denoPeer(answering((line) => `OK ... ${line}\n`), { hostname: "::1" });
  const socket = await runTask("socket_client", [
    "--host",
    "::1",
    "-p",
    socketPeer.port,
    "-m",
    "hi",
  ]);
  await socketPeer.done;
  assert.equal(socket.code, 0, socket.stderr);
  assert.equal(socket.stdout, "OK ... hi\n");
  assert.match(socket.stderr, new RegExp(`connected to \\[::1\\]:${socketPeer.port}\\n`));

  const sensorPeer = denoPeer(answering(() => "pong\n"), { hostname: "::1" });
  const sensor = await runTask("sensor_client", [
    ...["--host", "::1", "-p", sensorPeer.port, "--count", "1", "--interval", "0.05"],
    "--timeout",
    "5",
  ]);
  await sensorPeer.done;
  assert.equal(sensor.code, 0, sensor.stderr);
  assert.match(sensor.stdout, new RegExp(`^Connected to \\[::1\\]:${sensorPeer.port} in `));
  assert.match(
    sensor.stdout,
    new RegExp(`\\n--- \\[::1\\]:${sensorPeer.port} sensor statistics ---\\n`),
  );

  const tcpPeer = denoPeer(async (conn) => void await conn.read(new Uint8Array(64)), {
    hostname: "::1",
  });
  const tcp = await runTask("tcp_client", ["--host", "::1", "-p", tcpPeer.port]);
  await tcpPeer.done;
  assert.equal(tcp.code, 0, tcp.stderr);
  assert.match(tcp.stdout, new RegExp(`^connected to \\[::1\\]:${tcpPeer.port}\\n`));

  const refused = await runTask("socket_client", [
    ...["--host", "::1", "-p", String(freePort()), "--attempts", "1", "-m", "x"],
  ]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /\nerror: connection refused by \[::1\]:\d+ after 1 attempt: /);
});

Deno.test("a refused connection after all attempts says what to do, on the port it tried", async () => {
  const port = String(freePort());
  const cases: [string, string[], string][] = [
    ["socket_client", ["-p", port, "--attempts", "2", "-m", "x"], "after 2 attempts"],
    ["tcp_client", ["--host", "127.0.0.1", "-p", port, "--attempts", "1"], "after 1 attempt"],
    ["hello_client", ["-p", port], "after 3 attempts"],
    ["basic_client", ["-p", port], ""],
  ];
  for (const [task, args, after] of cases) {
    const r = await runTask(task, args);
    assert.equal(r.code, 1, `${task}: ${r.stderr}`);
    const server = task.replace("client", "server");
    assert.match(
      r.stderr,
      new RegExp(
        `(^|\\n)error: connection refused by 127\\.0\\.0\\.1:${port}${after ? ` ${after}` : ""}: ` +
          `is the server running\\? start it with deno task ${server} --port ${port}\\n$`,
      ),
      r.stderr,
    );
  }
});

Deno.test("numeric flags past their maximum are usage errors (sensor_client --interval 3000000)", async () => {
  const cases: [string, string[]][] = [
    ["sensor_client", ["--interval", "3000000"]],
    ["sensor_client", ["--count", "1000001"]],
    ["socket_client", ["--attempts", "101"]],
    ["tcp_client", ["--size", "1048577"]],
    ["tcp_client", ["--attempts", "101"]],
    ["basic_client", ["--timeout", "86401"]],
  ];
  for (const [task, args] of cases) {
    const r = await runTask(task, ["-p", String(freePort()), ...args]);
    assert.equal(r.code, 2, `${task} ${args.join(" ")}: ${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(
        `^error: invalid ${args[0]} '${args[1]}': .* to \\d+ \\(see ${task} --help\\)\\n$`,
      ),
    );
  }
  const help = await runTask("sensor_client", ["--help"]);
  assert.match(help.stdout, /--interval SECONDS +.*\(default 1, max 3600\)/);
  assert.match(help.stdout, /--count N +.*\(default 0, max 1000000\)/);
});
