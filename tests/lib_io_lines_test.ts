import assert from "node:assert/strict";
import {
  closeWhenIdle,
  IdleClock,
  readExact,
  readSome,
  ReadTimeoutError,
  UnexpectedEofError,
  writeAll,
} from "../lib/io.ts";
import { LineReader, LineTooLongError, serveLines, TruncatedLineError } from "../lib/lines.ts";
import { showBytes } from "../lib/cli.ts";
import { withTimeout } from "./helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A reader that hands out `data` in the given chunk sizes (cycled), then EOF. */
function chunked(data: Uint8Array, sizes: number[]) {
  let at = 0;
  let i = 0;
  const source = {
    reads: 0,
    consumed: 0,
    read(p: Uint8Array): Promise<number | null> {
      source.reads++;
      if (at >= data.length) return Promise.resolve(null);
      const n = Math.min(sizes[i++ % sizes.length], p.length, data.length - at);
      p.set(data.subarray(at, at + n));
      at += n;
      source.consumed = at;
      return Promise.resolve(n);
    },
  };
  return source;
}

/** A reader that never ends and never sends a newline. */
function endless() {
  const source = {
    consumed: 0,
    read(p: Uint8Array): Promise<number | null> {
      p.fill(0x41);
      source.consumed += p.length;
      return Promise.resolve(p.length);
    },
  };
  return source;
}

async function allLines(reader: LineReader): Promise<string[]> {
  const out: string[] = [];
  for await (const line of reader) out.push(dec.decode(line));
  return out;
}

Deno.test("LineReader splits lines delivered one byte at a time", async () => {
  const text = "alpha\nbeta\r\n\ngamma\n";
  assert.deepEqual(await allLines(new LineReader(chunked(enc.encode(text), [1]))), [
    "alpha",
    "beta",
    "",
    "gamma",
  ]);
});

Deno.test("LineReader finds every newline among bytes that look like one, at every alignment", async () => {
  // The newline search tests four bytes at a time: bytes next to 0x0a in value
  // (0x0b, 0x09, 0x8a, 0x00, 0xff) must not fool it, wherever a line starts.
  const alphabet = [0x00, 0x09, 0x0b, 0x8a, 0xff, 0x61];
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const lines = Array.from(
    { length: 400 },
    (_, i) =>
      Uint8Array.from({ length: i % 23 }, () => alphabet[Math.floor(random() * alphabet.length)])
        .filter((b) => b !== 0x0a && b !== 0x0d),
  );
  const data = new Uint8Array(lines.reduce((n, l) => n + l.length + 1, 0));
  let at = 0;
  for (const line of lines) {
    data.set(line, at);
    data[at + line.length] = 0x0a;
    at += line.length + 1;
  }
  for (const sizes of [[1], [3, 5, 2], [4096]]) {
    const got: number[][] = [];
    for await (const line of new LineReader(chunked(data, sizes))) got.push([...line]);
    assert.deepEqual(got, lines.map((l) => [...l]), `chunks ${sizes}`);
  }
});

Deno.test("LineReader splits 1,000 lines that arrive in one read", async () => {
  const lines = Array.from({ length: 1000 }, (_, i) => `line ${i} ${"x".repeat(i % 50)}`);
  const data = enc.encode(lines.join("\n") + "\n");
  const source = chunked(data, [data.length]);
  assert.deepEqual(await allLines(new LineReader(source)), lines);
});

Deno.test("LineReader handles every split of a CRLF stream", async () => {
  const data = enc.encode("one\r\ntwo\r\nthree\r\n");
  for (let size = 1; size <= data.length; size++) {
    const got = await allLines(new LineReader(chunked(data, [size, 3, 1])));
    assert.deepEqual(got, ["one", "two", "three"], `chunk size ${size}`);
  }
});

Deno.test("LineReader keeps a CR in the middle of a line and raw non-UTF-8 bytes", async () => {
  const data = new Uint8Array([0x61, 0x0d, 0x62, 0xff, 0x00, 0xfe, 0x0a]);
  const reader = new LineReader(chunked(data, [2]));
  const line = await reader.readLine();
  assert.deepEqual(line, new Uint8Array([0x61, 0x0d, 0x62, 0xff, 0x00, 0xfe]));
  assert.equal(await reader.readLine(), null);
});

Deno.test("LineReader returns the bytes after the last newline at EOF, then null", async () => {
  const reader = new LineReader(chunked(enc.encode("done\npartial"), [4]));
  assert.equal(dec.decode((await reader.readLine())!), "done");
  assert.equal(dec.decode((await reader.readLine())!), "partial");
  assert.equal(await reader.readLine(), null);
  assert.equal(await reader.readLine(), null);
});

Deno.test("LineReader rejects a line over maxLine that has a newline", async () => {
  const reader = new LineReader(chunked(enc.encode("ok\n" + "y".repeat(11) + "\n"), [5]), {
    maxLine: 10,
  });
  assert.equal(dec.decode((await reader.readLine())!), "ok");
  await assert.rejects(() => reader.readLine(), LineTooLongError);
});

Deno.test("LineReader accepts a line of exactly maxLine, with CRLF", async () => {
  const reader = new LineReader(chunked(enc.encode("z".repeat(10) + "\r\n"), [1]), {
    maxLine: 10,
  });
  assert.equal(dec.decode((await reader.readLine())!), "z".repeat(10));
});

Deno.test("LineReader stops an endless line without buffering without bound", async () => {
  const source = endless();
  const maxLine = 100_000;
  await assert.rejects(() => new LineReader(source, { maxLine }).readLine(), LineTooLongError);
  // It read one buffer (the limit, `\r\n`, rounded up to whole 4-byte words),
  // not everything the peer offered.
  assert.ok(source.consumed <= maxLine + 5, `consumed ${source.consumed}`);
});

Deno.test("LineReader.readBufferedLine takes only lines already read, never reads", async () => {
  const source = chunked(enc.encode("a\nb\nc"), [100]);
  const reader = new LineReader(source);
  assert.equal(reader.readBufferedLine(), null); // nothing read yet
  assert.equal(source.reads, 0);
  assert.equal(dec.decode((await reader.readLine())!), "a");
  assert.equal(dec.decode(reader.readBufferedLine()!), "b"); // came in the same read
  assert.equal(reader.readBufferedLine(), null); // "c" has no newline yet
  assert.equal(source.reads, 1);
  assert.equal(dec.decode((await reader.readLine())!), "c"); // end of stream: the rest
  assert.equal(source.reads, 2);
});

Deno.test("readExact reads exactly N bytes however they are split", async () => {
  const data = new Uint8Array(40).map((_, i) => i);
  const source = chunked(data, [1, 7, 3]);
  assert.deepEqual(await readExact(source, 32), data.subarray(0, 32));
  // The bytes after the 32nd are left for the next read.
  assert.deepEqual(await readExact(source, 8), data.subarray(32));
});

Deno.test("readExact reports how many bytes came before EOF", async () => {
  const err = await readExact(chunked(new Uint8Array(7), [2]), 32).then(
    () => assert.fail("should have thrown"),
    (e) => e,
  );
  assert.ok(err instanceof UnexpectedEofError);
  assert.equal(err.received, 7);
  assert.equal(err.expected, 32);
  assert.equal(err.message, "connection closed after 7 of 32 bytes");
});

Deno.test("writeAll loops over short writes", async () => {
  const written: number[] = [];
  const writer = {
    write(p: Uint8Array) {
      written.push(p[0]);
      return Promise.resolve(1); // one byte at a time
    },
  };
  await writeAll(writer, new Uint8Array([5, 6, 7, 8]));
  assert.deepEqual(written, [5, 6, 7, 8]);
});

Deno.test("readSome times out on a silent peer and resolves null on abort", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ port: listener.addr.port });
  const server = await listener.accept();
  try {
    await assert.rejects(
      () => readSome(server, new Uint8Array(8), { timeoutMs: 50 }),
      ReadTimeoutError,
    );
    const controller = new AbortController();
    const pending = readSome(client, new Uint8Array(8), { signal: controller.signal });
    controller.abort();
    assert.equal(await pending, null);
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("readExact across a real socket fed in tiny writes", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ port: listener.addr.port });
  client.setNoDelay(true);
  const server = await listener.accept();
  try {
    const reading = readExact(server, 32, { timeoutMs: 10_000 });
    for (let i = 0; i < 32; i++) await writeAll(client, new Uint8Array([2]));
    assert.deepEqual(await reading, new Uint8Array(32).fill(2));
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("serveLines answers every line in order, batched, then ERR line too long", async () => {
  const input = enc.encode("a\nbb\r\n" + "c".repeat(20) + "\nnever\n");
  const out: Uint8Array[] = [];
  let writes = 0;
  const conn = {
    ...chunked(input, [input.length]),
    write(p: Uint8Array) {
      writes++;
      out.push(p.slice());
      return Promise.resolve(p.length);
    },
    close() {},
  };
  const OK = enc.encode("OK ... ");
  const NL = enc.encode("\n");
  await assert.rejects(
    () => serveLines(conn, (line) => [OK, line, NL], { maxLine: 10 }),
    LineTooLongError,
  );
  assert.equal(
    dec.decode(new Uint8Array(out.flatMap((c) => [...c]))),
    "OK ... a\nOK ... bb\nERR line too long\n",
  );
  assert.equal(writes, 1); // all three replies in one write
});

Deno.test("LineReader survives a read timeout: late bytes are not lost", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ port: listener.addr.port });
  const server = await listener.accept();
  try {
    const lines = new LineReader(server, { timeoutMs: 50 });
    await assert.rejects(() => lines.readLine(), ReadTimeoutError);
    await writeAll(client, enc.encode("late\nlater\n"));
    assert.equal(dec.decode((await lines.readLine())!), "late");
    assert.equal(dec.decode((await lines.readLine())!), "later");
    lines.close();
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("LineReader stopped by its signal drops a half-received line", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ port: listener.addr.port });
  const server = await listener.accept();
  try {
    const stop = new AbortController();
    const lines = new LineReader(server, { signal: stop.signal });
    await writeAll(client, enc.encode("whole\nhalf"));
    assert.equal(dec.decode((await lines.readLine())!), "whole");
    const next = lines.readLine();
    stop.abort();
    assert.equal(await next, null);
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("LineReader: one abort signal stops every reader waiting on it", async () => {
  const silent = { read: () => new Promise<number | null>(() => {}) };
  const stop = new AbortController();
  const readers = [1, 2, 3].map(() =>
    new LineReader(silent, { signal: stop.signal, timeoutMs: 60_000 })
  );
  const finished = new LineReader(chunked(enc.encode("x\n"), [2]), { signal: stop.signal });
  assert.deepEqual(await allLines(finished), ["x"]); // done before the abort: left alone
  const waits = readers.map((r) => r.readLine());
  stop.abort();
  // All three return; the idle-timeout sweep timer is stopped too (the op sanitizer checks).
  assert.deepEqual(await withTimeout(Promise.all(waits), 5000, "abort"), [null, null, null]);
});

Deno.test("LineReader: a last line cut by EOF obeys maxLine and loses its \\r", async () => {
  const long = new LineReader(chunked(enc.encode("0123456789A"), [3]), { maxLine: 10 });
  await assert.rejects(() => long.readLine(), LineTooLongError);
  const fits = new LineReader(chunked(enc.encode("0123456789\r"), [3]), { maxLine: 10 });
  assert.equal(dec.decode((await fits.readLine())!), "0123456789");
  assert.equal(await fits.readLine(), null);
});

Deno.test("LineReader with requireNewline: bytes after the last newline are a TruncatedLineError", async () => {
  const reader = new LineReader(chunked(enc.encode("OK ... hello\nOK ... hel"), [5]), {
    requireNewline: true,
  });
  assert.equal(dec.decode((await reader.readLine())!), "OK ... hello");
  const err = await reader.readLine().catch((e) => e);
  assert.ok(err instanceof TruncatedLineError, String(err));
  assert.equal(dec.decode(err.partial), "OK ... hel");
  const clean = new LineReader(chunked(enc.encode("a\n"), [1]), { requireNewline: true });
  assert.deepEqual(await allLines(clean), ["a"]);
});

Deno.test("LineReader's timeoutMs bounds the whole line: trickled bytes do not extend it", async () => {
  let sent = 0;
  const trickle = { // one byte every 20 ms, never a newline
    read(p: Uint8Array): Promise<number | null> {
      return new Promise((resolve) =>
        setTimeout(() => {
          p[0] = 0x41;
          sent++;
          resolve(1);
        }, 20)
      );
    },
  };
  const reader = new LineReader(trickle, { timeoutMs: 150 });
  const t0 = performance.now();
  await assert.rejects(() => reader.readLine(), ReadTimeoutError);
  const ms = performance.now() - t0;
  assert.ok(ms >= 150 && ms < 1000, `timed out after ${ms} ms`);
  assert.ok(sent >= 3, `only ${sent} bytes trickled`);
  // The read still in flight must end before the test does (op sanitizer).
  await new Promise((r) => setTimeout(r, 50));
});

Deno.test("IdleClock fires once after its timeout, not when restarted in time, not when stopped", async () => {
  let fired = 0;
  const clock = new IdleClock(60, () => fired++);
  clock.restart();
  for (let i = 0; i < 5; i++) { // restarted every 30 ms for 150 ms: never idle
    await new Promise((r) => setTimeout(r, 30));
    clock.restart();
  }
  assert.equal(fired, 0);
  assert.equal(clock.expired, false);
  const t0 = performance.now();
  while (fired === 0 && performance.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 5));
  const ms = performance.now() - t0;
  assert.equal(fired, 1);
  assert.ok(clock.expired);
  assert.ok(ms >= 55 && ms < 500, `fired after ${ms} ms`);
  const stopped = new IdleClock(20, () => fired++);
  stopped.restart();
  stopped.stop();
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(fired, 1); // and no sweep timer is left running (the op sanitizer checks)
});

Deno.test("closeWhenIdle: a peer that never reads is closed and reported idle", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ port: listener.addr.port });
  const server = await listener.accept();
  try {
    const big = new Uint8Array(32 * 1024 * 1024); // more than the kernel buffers hold
    const t0 = performance.now();
    await assert.rejects(
      () => closeWhenIdle(server, 200, (idle) => writeAll(server, big, idle)),
      ReadTimeoutError,
    );
    assert.ok(performance.now() - t0 < 2000);
  } finally {
    client.close();
    listener.close();
  }
});

Deno.test("serveLines: a peer that reads slowly but steadily is never idle", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ port: listener.addr.port });
  const server = await listener.accept();
  try {
    const line = new Uint8Array(12 * 1024 * 1024).fill(0x62);
    const serving = serveLines(server, (l) => [l, enc.encode("\n")], {
      maxLine: line.length,
      idleTimeoutMs: 300,
    });
    const sending = writeAll(client, line).then(() => client.closeWrite());
    let got = 0;
    const buf = new Uint8Array(128 * 1024);
    const t0 = performance.now();
    while (got < line.length + 1 && performance.now() - t0 < 30_000) {
      const n = await client.read(buf);
      if (n === null) break;
      got += n;
      await new Promise((r) => setTimeout(r, 5)); // about 20 MB/s: over 300 ms in all
    }
    await sending;
    await serving;
    assert.equal(got, line.length + 1);
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});

Deno.test("showBytes escapes control bytes, invalid UTF-8 and invisible characters, keeps text", () => {
  const b = (...x: number[]) => new Uint8Array(x);
  assert.equal(showBytes(enc.encode("héllo ✓ 😀")), "héllo ✓ 😀");
  assert.equal(
    showBytes(enc.encode("\x1b]0;title\x07\x1b[2J\rfake\n\t")),
    String.raw`\x1b]0;title\x07\x1b[2J\rfake\n\t`,
  );
  assert.equal(showBytes(b(0x61, 0xff, 0xc3)), String.raw`a\xff\xc3`); // not UTF-8, cut sequence
  assert.equal(showBytes(b(0xe0, 0x80, 0xaf)), String.raw`\xe0\x80\xaf`); // overlong
  assert.equal(showBytes(b(0xed, 0xa0, 0x80)), String.raw`\xed\xa0\x80`); // a surrogate
  assert.equal(showBytes(b(0x7f, 0xc2, 0x9b)), String.raw`\x7f\u{9b}`); // DEL, C1 CSI
  assert.equal(showBytes(enc.encode("a\u202eb")), String.raw`a\u{202e}b`); // right-to-left override
  assert.equal(showBytes(enc.encode("x".repeat(300)), 10), "xxxxxxxxxx... (300 bytes)");
  assert.equal(showBytes(enc.encode("\ufeffbom")), String.raw`\u{feff}bom`); // a BOM is shown, not dropped
});
