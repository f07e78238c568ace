/**
 * End-to-end: scripts/socket_server.ts and scripts/socket_client.ts as real
 * processes, started the way their `deno task` starts them: with each other,
 * with nc and Python, and with stand-in peers that cut a reply off, never
 * answer, or are busy with another client.
 */
import assert from "node:assert/strict";
import {
  answering,
  decoder,
  denoPeer,
  encoder,
  exchange,
  freePort,
  hasCommand,
  LineClient,
  readAll,
  Running,
  runTask,
  sh,
  startServer,
  taskCommand,
} from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

const HAS_NC = hasCommand("nc");
const HAS_PYTHON = hasCommand("python3");

Deno.test("socket_server answers split and coalesced lines, CRLF and raw bytes exactly", async () => {
  const server = await startServer("socket_server");
  try {
    // 1,000 lines sent in one write and in 1-byte and 7-byte pieces.
    const lines = Array.from({ length: 1000 }, (_, i) => `line ${i}`);
    const input = encoder.encode(lines.join("\n") + "\n");
    const expected = lines.map((l) => `OK ... ${l}\n`).join("");
    assert.equal(decoder.decode(await exchange(server.port, input)), expected);
    const few = lines.slice(0, 40);
    for (const chunk of [1, 7]) {
      const reply = await exchange(server.port, encoder.encode(few.join("\n") + "\n"), chunk);
      assert.equal(decoder.decode(reply), few.map((l) => `OK ... ${l}\n`).join(""));
    }
    // CRLF is dropped before the newline; bytes that are not UTF-8 come back as they were.
    const raw = new Uint8Array([0x68, 0x69, 0x0d, 0x0a, 0xff, 0xfe, 0x00, 0x80, 0x0a]);
    const reply = await exchange(server.port, raw, 1);
    const prefix = [...encoder.encode("OK ... ")];
    assert.deepEqual(
      [...reply],
      [...prefix, 0x68, 0x69, 0x0a, ...prefix, 0xff, 0xfe, 0x00, 0x80, 0x0a],
    );
  } finally {
    await server.stop();
  }
});

Deno.test("socket_server: a second client waits until the first leaves", async () => {
  const server = await startServer("socket_server");
  const first = await LineClient.connect(server.port);
  const second = await LineClient.connect(server.port);
  try {
    assert.equal(await first.ask("from first"), "OK ... from first");
    await second.send("from second\n");
    let secondAnswered = false;
    const secondReply = second.line().then((l) => (secondAnswered = true, l));
    // The server is busy with the first client: it answers it again...
    assert.equal(await first.ask("again"), "OK ... again");
    // ...while the second is still waiting in the backlog.
    assert.equal(secondAnswered, false);
    first.close();
    assert.equal(await secondReply, "OK ... from second");
    await server.stdout.waitFor(/is offline[\s\S]*connected/);
  } finally {
    first.close();
    second.close();
    await server.stop();
  }
});

Deno.test("socket_server survives a client that resets mid-line", async () => {
  const server = await startServer("socket_server");
  try {
    const rude = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await rude.write(encoder.encode("x\n".repeat(10_000) + "half a li"));
    // Read one byte of the replies, so that more of them are surely unread:
    // closing a socket with unread data makes the kernel send RST, not FIN.
    await rude.read(new Uint8Array(1));
    rude.close();
    await server.stdout.waitFor(/connection reset|went away/);
    const client = await LineClient.connect(server.port);
    assert.equal(await client.ask("still here"), "OK ... still here");
    client.close();
  } finally {
    await server.stop();
  }
});

Deno.test("socket_server answers the last lines of a half-closing client", async () => {
  const server = await startServer("socket_server");
  try {
    // exchange() half-closes (shutdown SHUT_WR) right after sending.
    const reply = await exchange(server.port, encoder.encode("a\nb\nlast words"));
    assert.equal(decoder.decode(reply), "OK ... a\nOK ... b\nOK ... last words\n");
  } finally {
    await server.stop();
  }
});

Deno.test({
  name: "socket_server with nc -N: printf 'hello\\nworld\\n' prints exactly two OK lines",
  ignore: !HAS_NC,
  async fn() {
    const server = await startServer("socket_server");
    try {
      const out = await sh(`printf 'hello\\nworld\\n' | nc -N 127.0.0.1 ${server.port}`);
      assert.equal(out.code, 0, out.stderr);
      assert.equal(decoder.decode(out.stdout), "OK ... hello\nOK ... world\n");
    } finally {
      await server.stop();
    }
  },
});

Deno.test({
  name: "socket_server with a Python socket client sending a line in pieces",
  ignore: !HAS_PYTHON,
  async fn() {
    const server = await startServer("socket_server");
    try {
      const py = `
import socket, time
s = socket.create_connection(("127.0.0.1", ${server.port}))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for piece in [b"sen", b"sor 2", b"1.5\\r", b"\\nsecond\\n"]:
    s.sendall(piece)
    time.sleep(0.01)
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk: break
    data += chunk
print(data.decode(), end="")
`;
      const out = await sh(`python3 -c '${py.replaceAll("'", "'\\''")}'`);
      assert.equal(out.code, 0, out.stderr);
      assert.equal(decoder.decode(out.stdout), "OK ... sensor 21.5\nOK ... second\n");
    } finally {
      await server.stop();
    }
  },
});

Deno.test("socket_server drops an endless line with ERR line too long and keeps serving", async () => {
  const server = await startServer("socket_server", ["--port", "0", "--max-line", "1000"]);
  try {
    const reply = await exchange(server.port, new Uint8Array(5000).fill(0x61));
    assert.equal(decoder.decode(reply), "ERR line too long\n");
    const client = await LineClient.connect(server.port);
    assert.equal(await client.ask("ok?"), "OK ... ok?");
    client.close();
  } finally {
    await server.stop();
  }
});

Deno.test("socket_server: a last line cut by end of stream obeys --max-line and loses its \\r", async () => {
  const server = await startServer("socket_server", ["--port", "0", "--max-line", "10"]);
  try {
    const exchange = async (text: string) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      try {
        await writeAll(conn, encoder.encode(text));
        await conn.closeWrite();
        return decoder.decode(await readAll(conn));
      } finally {
        conn.close();
      }
    };
    assert.equal(await exchange("0123456789A"), "ERR line too long\n");
    assert.equal(await exchange("0123456789\r"), "OK ... 0123456789\n");
    assert.equal(await exchange("ok\nlast\r"), "OK ... ok\nOK ... last\n");
  } finally {
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
  }
});

Deno.test("socket_server drops a silent client after --idle-timeout", async () => {
  const server = await startServer("socket_server", ["--port", "0", "--idle-timeout", "0.3"]);
  try {
    const silent = await LineClient.connect(server.port);
    assert.equal(await silent.line(), null); // closed by the server
    silent.close();
    await server.stdout.waitFor(/idle for 0\.3 s/);
    const client = await LineClient.connect(server.port);
    assert.equal(await client.ask("next"), "OK ... next");
    client.close();
  } finally {
    await server.stop();
  }
});

Deno.test("socket_server exits 0 within 2 s on SIGTERM, closing a connected client", async () => {
  const server = await startServer("socket_server");
  const client = await LineClient.connect(server.port);
  try {
    assert.equal(await client.ask("hi"), "OK ... hi");
    const t0 = performance.now();
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
    assert.ok(performance.now() - t0 < 2000, `took ${performance.now() - t0} ms`);
    assert.match(done.stdout, /shut down/);
    assert.equal(await client.line(), null);
  } finally {
    client.close();
  }
});

Deno.test("socket_server: port in use is one error line and exit 1", async () => {
  const first = await startServer("socket_server");
  try {
    const second = await runTask("socket_server", ["--port", String(first.port)]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, new RegExp(`^error: port ${first.port} is already in use`));
    assert.equal(second.stderr.trim().split("\n").length, 1, second.stderr);
  } finally {
    await first.stop();
  }
});

Deno.test("bad flags: one error line with a hint, exit 2, no stack trace", async () => {
  for (const task of ["socket_server", "socket_client"]) {
    for (
      const args of [
        ["--port", "abc"],
        ["--port", "70000"],
        ["--port", "-1"],
        ["--bogus"],
        ["--timeout", "86401"], // past the stated maximum
        ["--max-line", "99999999999999999999"],
      ]
    ) {
      if (task === "socket_server" && args[0] === "--timeout") args[0] = "--idle-timeout";
      if (task === "socket_client" && args[0] === "--max-line") continue;
      const r = await runTask(task, args);
      assert.equal(r.code, 2, `${task} ${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /^error: .*\(see \w+ --help\)\n$/, r.stderr);
    }
    const help = await runTask(task, ["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--port PORT[\s\S]*default/);
    assert.match(help.stdout, /--\S*timeout SECONDS .*\(default \d+, max 86400\)/);
  }
});

Deno.test("socket_client sends --message values and stdin lines, prints replies", async () => {
  const server = await startServer("socket_server");
  try {
    const port = String(server.port);
    const a = await runTask("socket_client", ["-p", port, "-m", "hello", "-m", "temp 21.5"]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout, "OK ... hello\nOK ... temp 21.5\n");
    const b = await runTask("socket_client", ["-p", port], "one\r\ntwo\n");
    assert.equal(b.code, 0, b.stderr);
    assert.equal(b.stdout, "OK ... one\nOK ... two\n");
    const c = await runTask("socket_client", ["-p", port], "");
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /^OK \.\.\. sensor-1 temperature=/);
  } finally {
    await server.stop();
  }
});

Deno.test("socket_client --help says what is sent without -m: stdin lines, or one sample on a terminal", async () => {
  const r = await runTask("socket_client", ["--help"]);
  assert.equal(r.code, 0);
  assert.match(
    r.stdout,
    /--message TEXT +.*each line of stdin when stdin is a pipe or file; on a terminal, or with empty input, one sample reading/,
  );
  assert.match(r.stdout, /--attempts N +.*\(default 5, max 100\)/);
});

Deno.test("socket_client retries until a server that starts late is up", async () => {
  const port = freePort();
  const client = new Running([
    ...taskCommand("socket_client"),
    ...["-p", String(port), "--attempts", "10", "-m", "late"],
  ]);
  // Start the server only once the client has reported a refused attempt.
  await client.stderr.waitFor(/attempt 1\/10 failed: Connection refused/);
  const server = await startServer("socket_server", ["--port", String(port)]);
  try {
    const r = await client.finished();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "OK ... late\n");
  } finally {
    await server.stop();
  }
});

Deno.test("socket_client with no server: each attempt reported, error line, exit 1", async () => {
  const port = freePort();
  const r = await runTask("socket_client", ["-p", String(port), "--attempts", "3", "-m", "x"]);
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.filter((l) => /^attempt \d\/3 failed/.test(l)).length, 3, r.stderr);
  assert.match(
    lines.at(-1)!,
    new RegExp(`^error: connection refused by 127\\.0\\.0\\.1:${port} after 3 attempts: `),
  );
  assert.doesNotMatch(r.stderr, /\s+at /);
});

Deno.test("socket_client times out on a server that never answers", async () => {
  const mute = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = mute.accept();
  try {
    const r = await runTask("socket_client", [
      "-p",
      String(mute.addr.port),
      "--timeout",
      "0.5",
      "-m",
      "x",
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error: no reply from \S+ within 0\.5 s \(--timeout\)/);
  } finally {
    (await accepted).close();
    mute.close();
  }
});

Deno.test("socket_client against socket_server busy with another client: a timeout that says why", async () => {
  const server = await startServer("socket_server");
  const holder = await LineClient.connect(server.port);
  try {
    assert.equal(await holder.ask("mine"), "OK ... mine"); // the server is now busy with us
    const r = await runTask("socket_client", [
      "-p",
      String(server.port),
      "-m",
      "hi",
      "--timeout",
      "0.5",
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      /^error: no reply from 127\.0\.0\.1:\d+ within 0\.5 s \(--timeout\): is the server busy with another client\?/m,
    );
  } finally {
    holder.close();
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
  }
});

Deno.test("socket_client: a reply cut off by the server closing is an error, not a reply", async () => {
  const peer = denoPeer(async (conn, lines) => {
    await lines.readLine();
    await writeAll(conn, encoder.encode("OK ... hel")); // no newline, then close
  });
  const r = await runTask("socket_client", ["-p", peer.port, "-m", "hello"]);
  await peer.done;
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, "");
  assert.match(
    r.stderr,
    /\nerror: the reply was cut off: 127\.0\.0\.1:\d+ closed the connection after 'OK \.\.\. hel' \(no newline\)\n$/,
  );
});

Deno.test("socket_client: a stdin line over the limit is named as the input's line 3", async () => {
  const peer = denoPeer(answering((line) => `OK ... ${line}\n`));
  const input = `first\nsecond\n${"x".repeat(70_000)}\nfourth\n`;
  const r = await runTask("socket_client", ["-p", peer.port], input);
  await peer.done;
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, "OK ... first\nOK ... second\n");
  assert.match(r.stderr, /\nerror: input line 3 is longer than 65536 bytes\n$/);
});
