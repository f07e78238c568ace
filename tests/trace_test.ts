/**
 * lib/trace.ts and `--trace`: unit tests of `traceConn` on a fake connection
 * (the exact lines: reads, EOF, short writes, failures, closeWrite, close,
 * escaping and the 64-byte cut) and on a real one; then the scripts as real
 * processes: a line split over two reads shows as two reads and one reply,
 * two lines sent together as one read and one write, a reply sent in two
 * pieces as two reads in the client, a reset as a failed read; every script
 * traces its connections with `--trace`, and without it prints no trace line
 * and never wraps the connection.
 */
import assert from "node:assert/strict";
import { arriving, loopbackPair } from "./fakes.ts";
import {
  decoder,
  denoPeer,
  encoder,
  hasCommand,
  python,
  readAll,
  ROOT,
  Running,
  runTask,
  type Server,
  startServer,
  taskCommand,
} from "./helpers.ts";
import { writeAll } from "../lib/io.ts";
import { LineReader } from "../lib/io.ts";
import { type TraceableConn, traceConn } from "../lib/trace.ts";

const EOF_EVENT = "read EOF (the peer sent FIN: no more bytes from it)";

/** A connection that reads `reads` (one per read, then EOF) and writes with `write`. */
function fakeConn(
  reads: string[] = [],
  write: (p: Uint8Array) => Promise<number> = (p) => Promise.resolve(p.length),
  hostname = "127.0.0.1",
) {
  const source = arriving(reads);
  const conn = {
    remoteAddr: { transport: "tcp" as const, hostname, port: 41234 },
    closed: false,
    read: (p: Uint8Array) => source.read(p),
    write,
    closeWrite: () => Promise.resolve(),
    close() {
      if (conn.closed) throw new Deno.errors.BadResource("Bad resource ID");
      conn.closed = true;
    },
  };
  return conn;
}

/** Traces `conn` with a clock the test sets (`clock.t`, ms) and the lines collected. */
function traced<C extends TraceableConn>(conn: C) {
  const lines: string[] = [];
  const clock = { t: 1000 };
  traceConn(conn, { print: (line) => lines.push(line), now: () => clock.t });
  return { conn, lines, clock };
}

Deno.test("traceConn: each read is a line (bytes, count, seconds since tracing began), and so is EOF", async () => {
  const { conn, lines, clock } = traced(fakeConn(["hel", "lo\nwor"]));
  const buf = new Uint8Array(100);
  clock.t = 1412;
  assert.equal(await conn.read(buf), 3);
  assert.equal(decoder.decode(buf.subarray(0, 3)), "hel"); // the caller gets the bytes as they were
  clock.t = 2415;
  assert.equal(await conn.read(buf), 6);
  clock.t = 2420;
  assert.equal(await conn.read(buf), null);
  assert.deepEqual(lines, [
    `trace 127.0.0.1:41234 +0.412s read 3 B "hel"`,
    String.raw`trace 127.0.0.1:41234 +1.415s read 6 B "lo\nwor"`,
    `trace 127.0.0.1:41234 +1.420s ${EOF_EVENT}`,
  ]);
});

Deno.test("traceConn: a write is a line as it starts; a short one is followed by 'took N of M B', and writeAll's next write sends the rest", async () => {
  const limit = (p: Uint8Array) => Promise.resolve(Math.min(p.length, 65536));
  const { conn, lines } = traced(fakeConn([], limit));
  assert.equal(await conn.write(encoder.encode("OK ... hello\n")), 13);
  const big = encoder.encode("OK ... " + "x".repeat(100_000 - 8) + "\n");
  await writeAll(conn, big);
  const x57 = "x".repeat(57);
  assert.deepEqual(lines, [
    String.raw`trace 127.0.0.1:41234 +0.000s write 13 B "OK ... hello\n"`,
    `trace 127.0.0.1:41234 +0.000s write 100000 B "OK ... ${x57}"... (100000 bytes)`,
    "trace 127.0.0.1:41234 +0.000s write took 65536 of 100000 B: the send buffer is full",
    `trace 127.0.0.1:41234 +0.000s write 34464 B "${"x".repeat(64)}"... (34464 bytes)`,
  ]);
});

Deno.test("traceConn: a peer's bytes are escaped and cut to 64, so each event stays one line", async () => {
  const hostile = "\x1b[2J\rfake\n" + "é".repeat(40); // 10 bytes, then 80 of UTF-8
  const { conn, lines } = traced(fakeConn([hostile]));
  await conn.read(new Uint8Array(200));
  // The first 64 bytes: the 10, then 27 é.
  const shown = String.raw`"\x1b[2J\rfake\n` + "é".repeat(27) + '"... (90 bytes)';
  assert.deepEqual(lines, [`trace 127.0.0.1:41234 +0.000s read 90 B ${shown}`]);
  assert.equal(lines[0].split("\n").length, 1);
});

Deno.test("traceConn: a peer's own backslash and quote are escaped; a character is never cut in two", async () => {
  const fake = String.raw`\x1b "quoted"`; // the four characters \x1b, not an ESC byte
  const { conn, lines } = traced(fakeConn([fake, "x".repeat(63) + "é!"]));
  await conn.read(new Uint8Array(200));
  await conn.read(new Uint8Array(200)); // 63 bytes, then é across the 64th and 65th
  assert.deepEqual(lines, [
    String.raw`trace 127.0.0.1:41234 +0.000s read 13 B "\\x1b \"quoted\""`,
    `trace 127.0.0.1:41234 +0.000s read 66 B "${"x".repeat(63)}"... (66 bytes)`,
  ]);
});

Deno.test("traceConn: a failed read or write is a line, and the same error still reaches the caller", async () => {
  const reset = new Deno.errors.ConnectionReset("Connection reset by peer (os error 104)");
  const pipe = new Deno.errors.BrokenPipe("Broken pipe (os error 32)");
  const conn = fakeConn([], () => Promise.reject(pipe));
  conn.read = () => Promise.reject(reset);
  const { lines } = traced(conn);
  await assert.rejects(conn.read(new Uint8Array(8)), (err) => err === reset);
  await assert.rejects(conn.write(new Uint8Array(8)), (err) => err === pipe);
  assert.deepEqual(lines, [
    "trace 127.0.0.1:41234 +0.000s read failed: connection reset (RST)",
    String.raw`trace 127.0.0.1:41234 +0.000s write 8 B "\x00\x00\x00\x00\x00\x00\x00\x00"`,
    "trace 127.0.0.1:41234 +0.000s write failed: broken pipe (the peer is gone)",
  ]);
});

Deno.test("traceConn: closeWrite and close are lines; closing what is already closed prints nothing", async () => {
  const { conn, lines, clock } = traced(fakeConn([], undefined, "::1"));
  clock.t = 1500;
  await conn.closeWrite();
  clock.t = 2000;
  conn.close();
  assert.throws(() => conn.close(), Deno.errors.BadResource); // as closeQuietly's second close
  assert.equal(conn.closed, true);
  assert.deepEqual(lines, [
    "trace [::1]:41234 +0.500s closeWrite (we send FIN)", // IPv6 in brackets
    "trace [::1]:41234 +1.000s close",
  ]);
});

Deno.test("traceConn: a real connection stays the same object and keeps working; a close under a read shows both", async () => {
  const pair = await loopbackPair();
  const lines: string[] = [];
  try {
    const server = traceConn(pair.server, { print: (line) => lines.push(line) });
    assert.equal(server, pair.server); // identity: OpenClients, LineReader... keep theirs
    const peer = `127.0.0.1:${pair.client.localAddr.port}`;
    await writeAll(pair.client, encoder.encode("one\ntwo\n"));
    const reader = new LineReader(server);
    assert.equal(decoder.decode((await reader.readLine())!), "one");
    await writeAll(server, encoder.encode("hi\n"));
    const pending = server.read(new Uint8Array(8)); // nothing more comes: it waits
    server.close();
    await assert.rejects(pending, Deno.errors.Interrupted);
    const events = lines.map((line) => {
      const m = line.match(/^trace (\S+) \+\d+\.\d{3}s (.*)$/);
      assert.ok(m, line);
      assert.equal(m[1], peer);
      return m[2];
    });
    assert.deepEqual(events, [
      String.raw`read 8 B "one\ntwo\n"`,
      String.raw`write 3 B "hi\n"`,
      "close",
      "read failed: interrupted (we closed the connection)",
    ]);
  } finally {
    pair.close();
  }
});

// ---- the scripts, as processes ----

const TIME = String.raw`\+\d+\.\d{3}s`;
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** The events traced for `peer` in `stderr`, time dropped; every one of them well formed. */
function eventsFor(stderr: string, peer: string): string[] {
  const out: string[] = [];
  for (const line of stderr.split("\n")) {
    if (!line.startsWith(`trace ${peer} `)) continue;
    const m = line.match(new RegExp(`^trace ${esc(peer)} ${TIME} (.+)$`));
    assert.ok(m, `a malformed trace line: ${line}`);
    out.push(m[1]);
  }
  return out;
}

/** Waits until `output` shows `event` for `peer`. */
function waitForEvent(output: Running["stderr"], peer: string, event: string) {
  return output.waitFor(new RegExp(`trace ${esc(peer)} ${TIME} ${esc(event)}`));
}

Deno.test("socket_server --trace: a line split over two writes is two reads, one reply, then EOF", async () => {
  const server = await startServer("socket_server", ["--port", "0", "--trace"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const peer = `127.0.0.1:${conn.localAddr.port}`;
    await writeAll(conn, encoder.encode("hel"));
    await waitForEvent(server.stderr, peer, `read 3 B "hel"`); // the event, not a sleep
    await writeAll(conn, encoder.encode("lo\nwor"));
    await conn.closeWrite();
    assert.equal(decoder.decode(await readAll(conn)), "OK ... hello\nOK ... wor\n");
    await waitForEvent(server.stderr, peer, "close");
    assert.deepEqual(eventsFor(server.stderr.text, peer), [
      `read 3 B "hel"`,
      String.raw`read 6 B "lo\nwor"`,
      String.raw`write 13 B "OK ... hello\n"`,
      EOF_EVENT,
      String.raw`write 11 B "OK ... wor\n"`, // the unfinished line, answered at the end
      "close",
    ]);
    await server.stdout.waitFor(`Client (${peer}) is offline`); // the log is as before
    assert.doesNotMatch(server.stdout.text, /trace/); // the trace is on stderr only
  } finally {
    conn.close();
    await server.stop();
  }
});

Deno.test("socket_server --trace: two lines sent together are one read and one write", async () => {
  const server = await startServer("socket_server", ["--port", "0", "--trace"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const peer = `127.0.0.1:${conn.localAddr.port}`;
    await writeAll(conn, encoder.encode("a\nb\n"));
    const reader = new LineReader(conn);
    assert.equal(decoder.decode((await reader.readLine())!), "OK ... a");
    assert.equal(decoder.decode((await reader.readLine())!), "OK ... b");
    await conn.closeWrite();
    assert.equal(await reader.readLine(), null);
    await waitForEvent(server.stderr, peer, "close");
    assert.deepEqual(eventsFor(server.stderr.text, peer), [
      String.raw`read 4 B "a\nb\n"`,
      String.raw`write 18 B "OK ... a\nOK ... b\n"`,
      EOF_EVENT,
      "close",
    ]);
  } finally {
    conn.close();
    await server.stop();
  }
});

Deno.test("socket_client --trace: a reply sent in two pieces is two reads, and one line printed", async () => {
  const peer = denoPeer(async (conn, lines) => {
    await lines.readLine();
    await writeAll(conn, encoder.encode("OK ... pi"));
    await client.stderr.waitFor(/read 9 B "OK \.\.\. pi"/); // the client has read the first piece
    await writeAll(conn, encoder.encode("ece\n"));
    await lines.readLine(); // until the client leaves
  });
  const client = new Running([
    ...taskCommand("socket_client"),
    "-p",
    peer.port,
    "-m",
    "piece",
    "--trace",
  ]);
  const done = await client.finished();
  await peer.done;
  assert.equal(done.code, 0, done.stderr);
  assert.equal(done.stdout, "OK ... piece\n");
  assert.deepEqual(eventsFor(done.stderr, `127.0.0.1:${peer.port}`), [
    String.raw`write 6 B "piece\n"`,
    `read 9 B "OK ... pi"`,
    String.raw`read 4 B "ece\n"`,
    "close",
  ]);
});

Deno.test("bind_socket --trace: a status line and headers sent together are one read", async () => {
  const answer = "HTTP/1.0 200 OK\r\nServer: test\r\n\r\n";
  const peer = denoPeer(async (conn, lines) => {
    while ((await lines.readLine())?.length) { /* the request, up to its empty line */ }
    await writeAll(conn, encoder.encode(answer)); // one write: the line and what follows it
  });
  const client = new Running([
    ...taskCommand("bind_socket"),
    "--host",
    "127.0.0.1",
    "-p",
    peer.port,
    "--request",
    "--trace",
  ]);
  const done = await client.finished();
  await peer.done;
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stdout, /HTTP\/1\.0 200 OK\n$/);
  const events = eventsFor(done.stderr, `127.0.0.1:${peer.port}`);
  assert.match(events[0], /^write \d+ B "HEAD \/ HTTP\/1\.1\\r\\nHost: 127\.0\.0\.1/);
  // One read brought the status line and the rest; the client took the line it wanted.
  assert.deepEqual(events.slice(1), [
    String.raw`read 33 B "HTTP/1.0 200 OK\r\nServer: test\r\n\r\n"`,
    "close",
  ]);
});

Deno.test({
  name: "socket_server --trace: a client's reset is a failed read, then close",
  ignore: !hasCommand("python3"),
  async fn() {
    const server = await startServer("socket_server", ["--port", "0", "--trace"]);
    try {
      // SO_LINGER 0: close() sends RST, not FIN (a Deno client cannot do that).
      const client = await python(
        `import socket, struct
s = socket.create_connection(("127.0.0.1", {PORT}))
s.sendall(b"hello\\n")
got = b""
while not got.endswith(b"\\n"):
    got += s.recv(100)
print(s.getsockname()[1])
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()`,
        server.port,
      );
      assert.equal(client.code, 0, client.stderr);
      const peer = `127.0.0.1:${decoder.decode(client.stdout).trim()}`;
      await waitForEvent(server.stderr, peer, "close");
      assert.deepEqual(eventsFor(server.stderr.text, peer), [
        String.raw`read 6 B "hello\n"`,
        String.raw`write 13 B "OK ... hello\n"`,
        "read failed: connection reset (RST)",
        "close",
      ]);
      await server.stdout.waitFor(`${peer}: connection reset by client`);
    } finally {
      await server.stop();
    }
  },
});

/**
 * Sends `ping\n` to a server (over TLS, trusting the learning CA, if `tls`), half-closes, reads to
 * the end; returns our side's HOST:PORT.
 */
async function ping(port: number, tls = false): Promise<string> {
  const caCerts = [Deno.readTextFileSync(`${ROOT}certs/ca.pem`)];
  const conn = tls
    ? await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts })
    : await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, encoder.encode("ping\n"));
    await conn.closeWrite();
    await readAll(conn);
    return `127.0.0.1:${conn.localAddr.port}`;
  } finally {
    conn.close();
  }
}

/** Each server, with the flags that make it read one `ping\n` and close. */
/** Where the file_server of these tests stores files: a folder of their own, removed after. */
const FILES = Deno.makeTempDirSync({ prefix: "trace-test-files-" });
const SERVERS: Record<string, string[]> = {
  socket_server: [],
  socket_server_with_select: [],
  socket_server_threads: ["--workers", "1"],
  sensor_server: [],
  basic_server: [],
  hello_server: ["--forever"],
  tcp_server: ["--size", "5"],
  chat_server: [],
  file_server: ["--dir", FILES], // "ping" is a header length to it: it reads 4 bytes, refuses
  tcp_proxy: [], // given --to a socket_server of its own below; its client leg is labelled
  tls_server: [], // pinged over TLS (see ping): its trace shows the bytes decrypted
  http_server: [], // "ping" is no request line to it: 400, and it closes
};
/** What a server's trace must show of the ping: its read of it. */
const PING_READ: Record<string, string> = { file_server: String.raw`read 4 B "ping"` };

/** Each client: the server it talks to (ours, untraced; or a stand-in), its flags, and an event it must trace. */
const CLIENTS: Record<
  string,
  { server: string; serverArgs?: string[]; args: string[]; event: string }
> = {
  socket_client: {
    server: "socket_server",
    args: ["-m", "ping"],
    event: `read 12 B "OK ... ping\\n"`,
  },
  hello_client: { server: "hello_server", args: [], event: `read 14 B "Hello client!\\n"` },
  basic_client: { server: "basic_server", args: [], event: `write 15 B "Hello Server !\\n"` },
  sensor_client: {
    server: "sensor_server",
    args: ["--count", "1", "--interval", "0"],
    event: `read 5 B "pong\\n"`,
  },
  chat_client: {
    server: "chat_server",
    args: ["--name", "ping"],
    event: "closeWrite (we send FIN)",
  },
  tcp_client: {
    server: "tcp_server",
    args: ["--host", "127.0.0.1"],
    event: `write 32 B "${"\\x02".repeat(32)}"`,
  },
  file_client: {
    server: "file_server",
    serverArgs: ["--port", "0", "--dir", FILES],
    args: ["LICENSE"],
    event: String.raw`write 4 B "\x00\x00\x00\x1d"`, // the header's length, big-endian: 29
  },
  tls_client: {
    server: "tls_server",
    args: ["--host", "127.0.0.1", "-m", "ping"],
    event: `read 12 B "OK ... ping\\n"`,
  },
  bind_socket: {
    server: "", // a stand-in web server
    args: ["--host", "127.0.0.1", "--request"],
    event: `read 19 B "HTTP/1.0 200 OK\\r\\n\\r\\n"`,
  },
};

/** The scripts with no connection: they trace each datagram (`traceDatagram`); udp_test.ts runs them. */
const DATAGRAMS = ["udp_server", "udp_client"];

Deno.test("every script in scripts/ but the tour traces its connections with --trace", async () => {
  try {
    const scripts = [...Deno.readDirSync(`${ROOT}scripts`)]
      .filter((e) => e.isFile && e.name !== "demo.ts")
      .map((e) => e.name.replace(/\.ts$/, ""))
      .sort();
    const traced = [...Object.keys(SERVERS), ...Object.keys(CLIENTS), ...DATAGRAMS];
    assert.deepEqual(scripts, traced.sort());
    for (const [name, args] of Object.entries(SERVERS)) {
      const target = name === "tcp_proxy" ? await startServer("socket_server") : undefined;
      const to = target ? ["--to", `127.0.0.1:${target.port}`] : [];
      const server = await startServer(name, ["--port", "0", "--trace", ...to, ...args]);
      try {
        const peer = (target ? "client " : "") + await ping(server.port, name === "tls_server");
        await waitForEvent(server.stderr, peer, "close");
        const events = eventsFor(server.stderr.text, peer);
        const read = PING_READ[name] ?? String.raw`read 5 B "ping\n"`;
        assert.ok(events.includes(read), `${name}: ${server.stderr.text}`);
      } finally {
        await server.stop();
        await target?.stop();
      }
    }
    for (const [name, { server: serverName, serverArgs, args, event }] of Object.entries(CLIENTS)) {
      const web = serverName ? undefined : denoPeer(async (conn, lines) => {
        while ((await lines.readLine())?.length) { /* the request, up to its empty line */ }
        await writeAll(conn, encoder.encode("HTTP/1.0 200 OK\r\n\r\n"));
      });
      const server: Server | undefined = serverName
        ? await startServer(serverName, serverArgs)
        : undefined;
      const port = server?.port ?? Number(web!.port);
      try {
        const done = await runTask(name, ["--port", String(port), "--trace", ...args]);
        assert.equal(done.code, 0, `${name}: ${done.stderr}`);
        const events = eventsFor(done.stderr, `127.0.0.1:${port}`);
        assert.ok(events.includes(event), `${name} traced no '${event}':\n${done.stderr}`);
        // (A read under way may fail after the close: the sensor client always reads.)
        assert.ok(events.includes("close"), `${name}: ${done.stderr}`);
      } finally {
        await server?.stop();
        await web?.done;
      }
    }
  } finally {
    Deno.removeSync(FILES, { recursive: true });
  }
});

Deno.test("without --trace: no trace line, and no script wraps a connection unless asked", async () => {
  const server = await startServer("socket_server");
  try {
    await ping(server.port);
    const client = await runTask("socket_client", ["-p", String(server.port), "-m", "hi"]);
    assert.equal(client.code, 0, client.stderr);
    assert.equal(client.stdout, "OK ... hi\n");
    assert.doesNotMatch(client.stderr, /trace/);
  } finally {
    const done = await server.stop();
    assert.doesNotMatch(done.stderr, /trace/);
  }
  // Zero cost when off: every traceConn call in a script sits behind its flag.
  for (const path of [...Deno.readDirSync(`${ROOT}scripts`)].map((e) => e.name)) {
    if (!path.endsWith(".ts") || path === "demo.ts") continue;
    const file = path === "socket_server_threads.ts" ? "workers/pool_worker.ts" : path;
    const code = Deno.readTextFileSync(`${ROOT}scripts/${file}`);
    const tracer = DATAGRAMS.includes(path.replace(/\.ts$/, "")) ? "traceDatagram" : "traceConn";
    const calls = [...code.matchAll(new RegExp(`^.*${tracer}\\(.*$`, "gm"))].map((m) =>
      m[0].trim()
    );
    assert.ok(calls.length > 0, `${file} never calls ${tracer}`);
    for (const call of calls) {
      const traced = tracer === "traceConn"
        ? /^if \((args|flags)\.trace\) traceConn\((conn|server)(, \{ print: (logError|labelled\("\w+"\)) \})?\);/
        : /^if \(args\.trace\) traceDatagram\("(sent|received)", \w+, \w+, logError\);/;
      assert.match(call, traced, `${file}: ${call}`);
    }
  }
});
