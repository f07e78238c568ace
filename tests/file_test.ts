/**
 * End-to-end: scripts/file_server.ts and scripts/file_client.ts (lesson 10,
 * files sent with a length prefix) as real processes, with each other, with
 * Python's `struct` and `socket`, and with Deno peers that misbehave.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { readExact, writeAll } from "../lib/io.ts";
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
  sh,
  startServer,
  WAIT_MS,
  withTimeout,
} from "./helpers.ts";

const HAS_PYTHON = hasCommand("python3");

/** One file as the wire carries it: the header's length, the header, the content. */
function frame(name: string, content: Uint8Array, size = content.length): Uint8Array {
  const header = encoder.encode(JSON.stringify({ name, size }));
  return rawFrame(header, content);
}

function rawFrame(
  header: Uint8Array,
  content: Uint8Array = new Uint8Array(),
  length = header.length,
): Uint8Array {
  const out = new Uint8Array(4 + header.length + content.length);
  new DataView(out.buffer).setUint32(0, length);
  out.set(header, 4);
  out.set(content, 4 + header.length);
  return out;
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** Sends `bytes`, half-closes, and returns all the server answered. */
async function upload(port: number, bytes: Uint8Array, halfClose = true): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, bytes);
    if (halfClose) await conn.closeWrite();
    return decoder.decode(await readAll(conn));
  } finally {
    conn.close();
  }
}

/** A file_server on a free port, storing into a fresh folder. */
async function fileServer(...flags: string[]): Promise<{ server: Server; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "file-server-test-" });
  const server = await startServer("file_server", ["--port", "0", "--dir", dir, ...flags]);
  return { server, dir };
}

async function finish(server: Server, dir: string): Promise<void> {
  const done = await server.stop();
  await Deno.remove(dir, { recursive: true });
  assert.equal(done.code, 0, done.stderr);
}

async function listDir(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

Deno.test("file_client sends three files on one connection; file_server stores them exactly", async () => {
  const { server, dir } = await fileServer();
  const src = await Deno.makeTempDir({ prefix: "file-client-test-" });
  try {
    const random = crypto.getRandomValues(new Uint8Array(65536)); // binary: every byte value, \n too
    const big = new Uint8Array(3 * 1024 * 1024 + 7).map((_, i) => random[i % random.length] ^ i);
    await Deno.writeFile(join(src, "big.bin"), big);
    await Deno.writeFile(join(src, "empty"), new Uint8Array());
    await Deno.writeTextFile(join(src, "café latte.txt"), "hot\n");
    const files = ["big.bin", "empty", "café latte.txt"].map((f) => join(src, f));
    const r = await runTask("file_client", ["--port", String(server.port), ...files]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.equal(lines.length, 3, r.stdout);
    assert.match(
      lines[0],
      /^big\.bin: sent 3145735 bytes in [\d.]+ s \([\d.]+ MB\/s\); the server stored it, sha256 matches$/,
    );
    assert.match(lines[1], /^empty: sent 0 bytes/);
    assert.match(lines[2], /^café latte\.txt: sent 4 bytes/);
    assert.deepEqual(await Deno.readFile(join(dir, "big.bin")), big);
    assert.equal(await Deno.readTextFile(join(dir, "café latte.txt")), "hot\n");
    assert.deepEqual(await listDir(dir), ["big.bin", "café latte.txt", "empty"]);
    await server.stdout.waitFor(/stored 'big\.bin' \(3145735 bytes\)[^]*is offline/);
  } finally {
    await Deno.remove(src, { recursive: true });
    await finish(server, dir);
  }
});

Deno.test({
  name: "file_server speaks to Python's struct and socket: several files, OK <size> <sha256> each",
  ignore: !HAS_PYTHON,
  fn: async () => {
    const { server, dir } = await fileServer();
    try {
      const out = await python(
        `
import socket, struct, json, hashlib
s = socket.create_connection(("127.0.0.1", {PORT}))
files = [("one.txt", b"line 1\\nline 2\\n"), ("bytes.bin", bytes(range(256)) * 40)]
for name, data in files:
    header = json.dumps({"name": name, "size": len(data)}).encode()
    s.sendall(struct.pack(">I", len(header)) + header + data)
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
want = "".join("OK %d %s\\n" % (len(d), hashlib.sha256(d).hexdigest()) for _, d in files)
print("same" if got.decode() == want else "differ: %r" % got)
`,
        server.port,
      );
      assert.equal(decoder.decode(out.stdout).trim(), "same", out.stderr);
      assert.equal(await Deno.readTextFile(join(dir, "one.txt")), "line 1\nline 2\n");
    } finally {
      await finish(server, dir);
    }
  },
});

Deno.test("file_server refuses names that could leave --dir or hide, and never overwrites", async () => {
  const { server, dir } = await fileServer();
  try {
    const refused: [string, string][] = [
      ["", "'' is not a file name"],
      [".", "'.' is not a file name"],
      ["..", "'..' is not a file name"],
      ["../escape", "a file name may not contain / or \\"],
      ["/etc/passwd", "a file name may not contain / or \\"],
      ["..\\escape", "a file name may not contain / or \\"],
      ["nul\0byte", "a file name may not contain control characters"],
      ["esc\x1b[2J", "a file name may not contain control characters"],
      ["new\nline", "a file name may not contain control characters"],
      ["\ud800", "the file name is not valid Unicode"],
      ["x".repeat(256), "the file name is longer than 255 bytes"],
      [".part-1234", "names that start with .part- are the server's own"],
    ];
    for (const [name, reason] of refused) {
      assert.equal(
        await upload(server.port, frame(name, encoder.encode("data"))),
        `ERR ${reason}\n`,
      );
    }
    // Unicode, spaces included, is a fine name.
    const fine = "résumé 2026 ✓.txt";
    assert.match(
      await upload(server.port, frame(fine, encoder.encode("v1"))),
      /^OK 2 [0-9a-f]{64}\n$/,
    );
    assert.equal(
      await upload(server.port, frame(fine, encoder.encode("v2!"))),
      "ERR a file of that name exists already\n",
    );
    assert.equal(await Deno.readTextFile(join(dir, fine)), "v1");
    assert.deepEqual(await listDir(dir), [fine]);
    await server.stdout.waitFor("refused: '..' is not a file name");
  } finally {
    await finish(server, dir);
  }
});

Deno.test("file_server refuses bad headers, and a size over --max-size before any content", async () => {
  const { server, dir } = await fileServer("--max-size", "1000");
  try {
    const shape = 'ERR the header must be {"name": "<file name>", "size": <bytes>}\n';
    const cases: [Uint8Array, string][] = [
      [rawFrame(new Uint8Array(), undefined, 0), "ERR header length 0: it must be 1 to 65536\n"],
      [
        rawFrame(new Uint8Array(), undefined, 65537),
        "ERR header length 65537: it must be 1 to 65536\n",
      ],
      [rawFrame(encoder.encode("{not json")), "ERR the header is not UTF-8 JSON\n"],
      [rawFrame(new Uint8Array([0x7b, 0xff, 0x7d])), "ERR the header is not UTF-8 JSON\n"],
      [rawFrame(encoder.encode("[1,2]")), shape],
      [rawFrame(encoder.encode("null")), shape],
      [rawFrame(encoder.encode('{"name":"a","size":-1}')), shape],
      [rawFrame(encoder.encode('{"name":"a","size":1.5}')), shape],
      [rawFrame(encoder.encode('{"name":"a","size":"3"}')), shape],
      [rawFrame(encoder.encode('{"size":3}')), shape],
    ];
    for (const [bytes, reply] of cases) assert.equal(await upload(server.port, bytes), reply);
    // Only the header of a file too large: the answer comes without a byte of content.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, frame("huge.iso", new Uint8Array(), 5_000_000_000));
    assert.equal(
      decoder.decode(await readAll(conn)),
      "ERR 5000000000 bytes is over the limit of 1000 (--max-size)\n",
    );
    conn.close();
    // Other fields are ignored.
    const extra = encoder.encode('{"name":"ok.txt","size":2,"mode":"0777"}');
    assert.match(await upload(server.port, rawFrame(extra, encoder.encode("hi"))), /^OK 2 /);
    assert.deepEqual(await listDir(dir), ["ok.txt"]);
  } finally {
    await finish(server, dir);
  }
});

Deno.test({
  name:
    "a refused client that sends its whole file before reading (as a simple one does) reads ERR",
  ignore: !HAS_PYTHON,
  fn: async () => {
    const { server, dir } = await fileServer("--max-size", "1000");
    try {
      const out = await python(
        `
import socket, struct, json
s = socket.create_connection(("127.0.0.1", {PORT}))
h = json.dumps({"name": "big.bin", "size": 8 << 20}).encode()
s.sendall(struct.pack(">I", len(h)) + h + bytes(8 << 20))
print(s.recv(1000).decode(), end="")
`,
        server.port,
      );
      assert.equal(
        decoder.decode(out.stdout),
        "ERR 8388608 bytes is over the limit of 1000 (--max-size)\n",
        out.stderr,
      );
    } finally {
      await finish(server, dir);
    }
  },
});

Deno.test("file_server: a --dir that is empty or a file is one error line; a store error shows no path", async () => {
  const empty = await runTask("file_server", ["--port", "0", "--dir", ""]);
  assert.equal(empty.code, 2);
  assert.equal(empty.stderr, "error: --dir needs a folder (see file_server --help)\n");
  const notFolder = await runTask("file_server", ["--port", "0", "--dir", "LICENSE"]);
  assert.equal(notFolder.code, 1);
  assert.equal(notFolder.stderr, "error: --dir LICENSE: not a folder\n");
  assert.doesNotMatch(notFolder.stdout, /listening/);
  // The folder replaced by a file while the server runs: the client is told why, without our path.
  const { server, dir } = await fileServer();
  try {
    await Deno.remove(dir);
    await Deno.writeTextFile(dir, "");
    assert.equal(
      await upload(server.port, frame("a.txt", encoder.encode("hi"))),
      "ERR cannot store the file: Not a directory (os error 20)\n",
    );
    await server.stdout.waitFor(
      `refused: cannot store the file: Not a directory (os error 20): lstat '${dir}/a.txt'`,
    );
  } finally {
    await finish(server, dir);
  }
});

Deno.test("a client that closes, resets or goes silent mid-file leaves no file and no temporary file", async () => {
  const { server, dir } = await fileServer("--idle-timeout", "0.5");
  try {
    const half = frame("half.bin", new Uint8Array(50_000)).subarray(0, 30_000);
    // Closes mid-file.
    const closer = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(closer, half);
    closer.close();
    await server.stdout.waitFor(/connection closed after \d+ of 50000 bytes/);
    // Goes silent mid-file: the idle deadline drops it.
    const silent = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(silent, half);
    await server.stdout.waitFor("idle for 0.5 s, disconnected");
    silent.close();
    assert.deepEqual(await listDir(dir), []);
    if (HAS_PYTHON) {
      // Resets mid-file, and mid-header: a reset is a reset, not a bad header.
      const h = 'json.dumps({"name": "reset.bin", "size": 100000}).encode()';
      await resetAfter(server, `struct.pack(">I", len(${h})) + ${h} + bytes(40000)`, 3);
      await server.stdout.waitFor(/connection reset by client|closed after \d+ of 100000/);
      await resetAfter(server, `struct.pack(">I", 100) + b'{"name"'`, 4);
      await server.stdout.waitForCount(/connection reset by client/, 2);
      assert.doesNotMatch(server.stdout.text, /refused/);
    }
    assert.deepEqual(await listDir(dir), []);
    // And the server goes on.
    assert.match(await upload(server.port, frame("after.txt", encoder.encode("ok"))), /^OK 2 /);
  } finally {
    await finish(server, dir);
  }
});

/**
 * A Python client sends the bytes of the Python expression `send`, then resets (SO_LINGER 0: close
 * sends RST) once the server has logged its `connected` line, the `nth` (a reset before accept()
 * is one a server never sees), told so by a line on its stdin.
 */
async function resetAfter(server: Server, send: string, nth: number): Promise<void> {
  const code = `
import socket, struct, json, sys
s = socket.create_connection(("127.0.0.1", ${server.port}))
s.sendall(${send})
sys.stdin.readline()
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
`;
  const py = new Deno.Command("python3", { args: ["-c", code], stdin: "piped" }).spawn();
  await server.stdout.waitForCount(/\) connected/, nth);
  const w = py.stdin.getWriter();
  await w.write(encoder.encode("go\n"));
  await w.close();
  assert.equal((await py.status).code, 0);
}

Deno.test("file_client prints the server's refusal (escaped), stops sending, and exits 1", async () => {
  const { server, dir } = await fileServer("--max-size", "1000");
  const src = await Deno.makeTempDir({ prefix: "file-client-test-" });
  try {
    const path = join(src, "big.bin");
    await Deno.writeFile(path, new Uint8Array(64 * 1024 * 1024)); // far more than the socket buffers
    const started = performance.now();
    const r = await runTask("file_client", ["--port", String(server.port), path]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      "error: the server refused big.bin: 67108864 bytes is over the limit of 1000 (--max-size)\n",
    );
    assert.ok(performance.now() - started < WAIT_MS);
    assert.deepEqual(await listDir(dir), []);
  } finally {
    await Deno.remove(src, { recursive: true });
    await finish(server, dir);
  }
});

Deno.test("file_client checks the server's reply: its sha256, its reason (escaped), its shape", async () => {
  const src = await Deno.makeTempDir({ prefix: "file-client-test-" });
  const small = join(src, "a.txt");
  await Deno.writeTextFile(small, "abc");
  const big = join(src, "big.bin");
  await Deno.writeFile(big, new Uint8Array(8 * 1024 * 1024));
  const [abc, abd] = [sha256(encoder.encode("abc")), sha256(encoder.encode("abd"))];
  const cases: { reply: string; file?: string; early?: true; expect: string | RegExp }[] = [
    {
      reply: `OK 3 ${abd}\n`, // not what we sent
      expect: `error: a.txt: the server stored 3 bytes with sha256 ${abd}; ` +
        `we sent 3 with sha256 ${abc}\n`,
    },
    {
      reply: "ERR \x1b[2Jdisk \x07full\n",
      expect: "error: the server refused a.txt: \\x1b[2Jdisk \\x07full\n",
    },
    { reply: `OK 3 ${abc}`, expect: /^error: the stream ended in the middle of a line/ }, // no \n
    {
      reply: "OK ... ping\n", // not a file server
      expect: /^error: unexpected reply from 127\.0\.0\.1:\d+ to a\.txt: 'OK \.\.\. ping'\n$/,
    },
    {
      reply: `OK 8388608 ${"0".repeat(64)}\n`, // an OK before the content came
      file: big,
      early: true,
      expect: /^error: unexpected reply from 127\.0\.0\.1:\d+ to big\.bin: 'OK 8388608 0+'\n$/,
    },
  ];
  try {
    for (const { reply, file, early, expect } of cases) {
      const peer = denoPeer(async (conn) => {
        // A file_server in miniature: the length, the header, the content, then the reply.
        const length = new DataView((await readExact(conn, 4)).buffer).getUint32(0);
        const { size } = JSON.parse(decoder.decode(await readExact(conn, length)));
        if (!early) await readExact(conn, size);
        await writeAll(conn, encoder.encode(reply));
        if (early) await readAll(conn).catch(() => {}); // until the client gives up
      });
      const r = await runTask("file_client", [
        "--port",
        peer.port,
        "--timeout",
        "5",
        file ?? small,
      ]);
      await peer.done;
      assert.equal(r.code, 1, r.stderr);
      if (typeof expect === "string") assert.equal(r.stderr, expect);
      else assert.match(r.stderr, expect);
    }
  } finally {
    await Deno.remove(src, { recursive: true });
  }
});

Deno.test("file_client: usage errors exit 2, a missing file exits 1, both with one error line", async () => {
  const none = await runTask("file_client", []);
  assert.equal(none.code, 2);
  assert.equal(none.stderr, "error: give at least one FILE to send (see file_client --help)\n");
  const missing = await runTask("file_client", ["--port", "1", "no-such-file.bin"]);
  assert.equal(missing.code, 1);
  assert.equal(missing.stderr, "error: no such file: no-such-file.bin\n");
  const folder = await runTask("file_client", ["--port", "1", "scripts"]);
  assert.equal(folder.stderr, "error: scripts is not a file\n");
  const help = await runTask("file_client", ["--help"]);
  assert.match(help.stdout, /Usage: file_client \[options\] FILE\.\.\./);
  const server = await runTask("file_server", ["--max-size", "-1"]);
  assert.equal(server.code, 2);
  assert.match(server.stderr, /^error: invalid --max-size '-1'/);
});

Deno.test("file_server --trace shows the 4-byte length, the header and the content as separate reads", async () => {
  const { server, dir } = await fileServer("--trace");
  try {
    await upload(server.port, frame("t.txt", encoder.encode("hello\n")));
    await server.stderr.waitFor(
      /read 4 B "\\x00\\x00\\x00\\x19"\n.*read 25 B "\{\\"name\\":\\"t\.txt\\",\\"size\\":6\}"\n.*read 6 B "hello\\n"/,
    );
  } finally {
    await finish(server, dir);
  }
});

Deno.test({
  name: "a 256 MiB file streams through both sides in bounded memory",
  ignore: !HAS_PYTHON || Deno.build.os !== "linux",
  fn: async () => {
    const { server, dir } = await fileServer();
    const src = await Deno.makeTempDir({ prefix: "file-client-test-" });
    try {
      const path = join(src, "zeros.bin");
      const size = 256 * 1024 * 1024;
      await Deno.truncate(path, size).catch(async () => {
        await Deno.writeFile(path, new Uint8Array());
        await Deno.truncate(path, size);
      });
      // The client's peak memory, from Python's getrusage of its child.
      const client = [Deno.execPath(), "run", "-A", `${ROOT}scripts/file_client.ts`];
      const out = await sh(
        `python3 -c 'import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); ` +
          `print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' ` +
          `${client.join(" ")} --port ${server.port} ${path}`,
      );
      const [code, clientKiB] = decoder.decode(out.stdout).trim().split("\n").at(-1)!.split(" ");
      assert.equal(code, "0", out.stderr);
      const pid = await serverPid(server);
      const status = decoder.decode((await sh(`cat /proc/${pid}/status`)).stdout);
      const serverKiB = Number(/VmHWM:\s+(\d+)/.exec(status)![1]);
      assert.ok(Number(clientKiB) < 200_000, `client peak ${clientKiB} KiB`);
      assert.ok(serverKiB < 200_000, `server peak ${serverKiB} KiB`);
      assert.equal((await Deno.stat(join(dir, "zeros.bin"))).size, size);
    } finally {
      await Deno.remove(src, { recursive: true });
      await finish(server, dir);
    }
  },
});

/** The pid of the deno process that runs the server (under `deno task`, a child of the task's). */
async function serverPid(server: Running): Promise<number> {
  const out = await sh(
    `pgrep -P ${server.child.pid} -f file_server.ts || echo ${server.child.pid}`,
  );
  return Number(decoder.decode(out.stdout).trim().split("\n")[0]);
}

Deno.test("Ctrl+C mid-file: file_server stops within 2 s, exit 0, and leaves no temporary file", async () => {
  const { server, dir } = await fileServer("--trace");
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await writeAll(conn, frame("slow.bin", new Uint8Array(10_000)).subarray(0, 5_000));
    await server.stderr.waitFor(/read \d+ B "\{\\"name[^\n]*\n[^\n]*read \d+ B "\\x00/); // mid-file
    const started = performance.now();
    const done = await withTimeout(server.stop(), WAIT_MS, "stop");
    assert.equal(done.code, 0, done.stderr);
    assert.ok(performance.now() - started < 2500, `${performance.now() - started} ms`);
    assert.match(done.stdout, /file_server: shut down/);
    assert.deepEqual(await listDir(dir), []);
  } finally {
    conn.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "file_client draws a progress bar with bytes/s on a terminal (script(1) gives it one)",
  ignore: !hasCommand("script") || Deno.build.os !== "linux",
  fn: async () => {
    const { server, dir } = await fileServer();
    const src = await Deno.makeTempDir({ prefix: "file-client-test-" });
    try {
      const path = join(src, "zeros.bin");
      await Deno.writeFile(path, new Uint8Array());
      await Deno.truncate(path, 200 * 1024 * 1024); // long enough for a few redraws (every 0.1 s)
      const client = `${Deno.execPath()} run -A ${ROOT}scripts/file_client.ts`;
      const out = await sh(`script -qec '${client} --port ${server.port} ${path}' /dev/null`);
      const text = decoder.decode(out.stdout);
      assert.equal(out.code, 0, text + out.stderr);
      assert.match(text, /\r\[#* *\] \d+% of 209715200 bytes, [\d.]+ MB\/s.\[K/); // ".[K": ESC [K
      assert.match(text, /\r.\[Kzeros\.bin: sent 209715200 bytes .*sha256 matches/); // bar erased
    } finally {
      await Deno.remove(src, { recursive: true });
      await finish(server, dir);
    }
  },
});
