/**
 * Unit tests for the two line readers, `LineReader` (lib/io.ts) and
 * `BatchLineReader` (lib/many_clients.ts): framing a byte stream into lines
 * however the bytes arrive, the line limit, end of stream, stopping; and the
 * batches of the second (readBatch).
 *
 * @module
 */

import assert from "node:assert/strict";
import { LineReader, LineTooLongError, TruncatedLineError, writeAll } from "../lib/io.ts";
import { BatchLineReader } from "../lib/many_clients.ts";
import { arriving, chunked, endless, loopbackPair, silent } from "./fakes.ts";
import { WAIT_MS, withTimeout } from "./helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const DEFAULT_MAX_LINE = 64 * 1024;
/** The tests that hold for both readers run for each. */
const READERS = [["LineReader", LineReader], ["BatchLineReader", BatchLineReader]] as const;

async function allLines(reader: LineReader | BatchLineReader): Promise<string[]> {
  const out: string[] = [];
  for await (const line of reader) out.push(dec.decode(line));
  return out;
}

/** Every batch as text; a batch's lines are only valid until the next is asked for. */
async function allBatches(reader: BatchLineReader, into: string[][] = []): Promise<string[][]> {
  for (let batch; (batch = await reader.readBatch()) !== null;) {
    into.push([...batch].map((l) => dec.decode(l)));
  }
  return into;
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} splits lines delivered one byte at a time`, async () => {
    const text = "alpha\nbeta\r\n\ngamma\n";
    assert.deepEqual(await allLines(new Reader(chunked(enc.encode(text), [1]))), [
      "alpha",
      "beta",
      "",
      "gamma",
    ]);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} finds every newline among bytes that look like one, at every alignment`, async () => {
    // The newline search tests four bytes at a time once the buffer grows: bytes
    // next to 0x0a in value (0x0b, 0x09, 0x8a, 0x00, 0xff) must not fool it,
    // wherever a line starts.
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
      for await (const line of new Reader(chunked(data, sizes))) got.push([...line]);
      assert.deepEqual(got, lines.map((l) => [...l]), `chunks ${sizes}`);
    }
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} splits 1,000 lines that arrive in one read`, async () => {
    const lines = Array.from({ length: 1000 }, (_, i) => `line ${i} ${"x".repeat(i % 50)}`);
    const data = enc.encode(lines.join("\n") + "\n");
    const source = chunked(data, [data.length]);
    assert.deepEqual(await allLines(new Reader(source)), lines);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} handles every split of a CRLF stream`, async () => {
    const data = enc.encode("one\r\ntwo\r\nthree\r\n");
    for (let size = 1; size <= data.length; size++) {
      const got = await allLines(new Reader(chunked(data, [size, 3, 1])));
      assert.deepEqual(got, ["one", "two", "three"], `chunk size ${size}`);
    }
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} keeps a CR in the middle of a line and raw non-UTF-8 bytes`, async () => {
    const data = new Uint8Array([0x61, 0x0d, 0x62, 0xff, 0x00, 0xfe, 0x0a]);
    const reader = new Reader(chunked(data, [2]));
    const line = await reader.readLine();
    assert.deepEqual(line, new Uint8Array([0x61, 0x0d, 0x62, 0xff, 0x00, 0xfe]));
    assert.equal(await reader.readLine(), null);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} returns the bytes after the last newline at EOF, then null`, async () => {
    const reader = new Reader(chunked(enc.encode("done\npartial"), [4]));
    assert.equal(dec.decode((await reader.readLine())!), "done");
    assert.equal(dec.decode((await reader.readLine())!), "partial");
    assert.equal(await reader.readLine(), null);
    assert.equal(await reader.readLine(), null);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} rejects a line over maxLine that has a newline`, async () => {
    const reader = new Reader(chunked(enc.encode("ok\n" + "y".repeat(11) + "\n"), [5]), {
      maxLine: 10,
    });
    assert.equal(dec.decode((await reader.readLine())!), "ok");
    const err = await reader.readLine().catch((e) => e);
    assert.ok(err instanceof LineTooLongError, String(err));
    assert.equal(err.maxLine, 10);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} accepts a line of exactly maxLine, with CRLF`, async () => {
    const reader = new Reader(chunked(enc.encode("z".repeat(10) + "\r\n"), [1]), {
      maxLine: 10,
    });
    assert.equal(dec.decode((await reader.readLine())!), "z".repeat(10));
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} stops an endless line without buffering without bound`, async () => {
    const source = endless();
    const maxLine = 100_000;
    await assert.rejects(() => new Reader(source, { maxLine }).readLine(), LineTooLongError);
    // It read one buffer (the limit, `\r\n`, rounded up to whole 4-byte words),
    // not everything the peer offered.
    assert.ok(source.consumed <= maxLine + 5, `consumed ${source.consumed}`);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name}'s default limit is 64 KiB`, async () => {
    assert.equal(DEFAULT_MAX_LINE, 64 * 1024);
    const fits = enc.encode("f".repeat(DEFAULT_MAX_LINE) + "\n");
    assert.equal((await new Reader(chunked(fits, [5000])).readLine())!.length, DEFAULT_MAX_LINE);
    const over = enc.encode("o".repeat(DEFAULT_MAX_LINE + 1) + "\n");
    await assert.rejects(() => new Reader(chunked(over, [5000])).readLine(), LineTooLongError);
  });
}

Deno.test("BatchLineReader.readBufferedLine takes only lines already read, never reads", async () => {
  const source = chunked(enc.encode("a\nb\nc"), [100]);
  const reader = new BatchLineReader(source);
  assert.equal(reader.readBufferedLine(), null); // nothing read yet
  assert.equal(source.reads, 0);
  assert.equal(dec.decode((await reader.readLine())!), "a");
  assert.equal(dec.decode(reader.readBufferedLine()!), "b"); // came in the same read
  assert.equal(reader.readBufferedLine(), null); // "c" has no newline yet
  assert.equal(source.reads, 1);
  assert.equal(dec.decode((await reader.readLine())!), "c"); // end of stream: the rest
  assert.equal(source.reads, 2);
});

for (const [name, Reader] of READERS) {
  Deno.test(`${name}: a last line cut by EOF obeys maxLine and loses its \\r`, async () => {
    const long = new Reader(chunked(enc.encode("0123456789A"), [3]), { maxLine: 10 });
    await assert.rejects(() => long.readLine(), LineTooLongError);
    const fits = new Reader(chunked(enc.encode("0123456789\r"), [3]), { maxLine: 10 });
    assert.equal(dec.decode((await fits.readLine())!), "0123456789");
    assert.equal(await fits.readLine(), null);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} with requireNewline: bytes after the last newline are a TruncatedLineError`, async () => {
    const reader = new Reader(chunked(enc.encode("OK ... hello\nOK ... hel"), [5]), {
      requireNewline: true,
    });
    assert.equal(dec.decode((await reader.readLine())!), "OK ... hello");
    const err = await reader.readLine().catch((e) => e);
    assert.ok(err instanceof TruncatedLineError, String(err));
    assert.equal(dec.decode(err.partial), "OK ... hel");
    const clean = new Reader(chunked(enc.encode("a\n"), [1]), { requireNewline: true });
    assert.deepEqual(await allLines(clean), ["a"]);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name}: a read error fails this readLine and every later one, without reading again`, async () => {
    let reads = 0;
    const broken = new Deno.errors.ConnectionReset("reset");
    const reader = new Reader({
      read: () => (reads++, Promise.reject(broken)),
    });
    await assert.rejects(() => reader.readLine(), (e) => e === broken);
    await assert.rejects(() => reader.readLine(), (e) => e === broken);
    assert.equal(reads, 1);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} stopped by its signal drops a half-received line`, async () => {
    const { client, server, close } = await loopbackPair();
    try {
      const stop = new AbortController();
      const lines = new Reader(server, { signal: stop.signal });
      await writeAll(client, enc.encode("whole\nhalf"));
      assert.equal(dec.decode((await lines.readLine())!), "whole");
      const next = lines.readLine();
      stop.abort();
      assert.equal(await next, null);
      assert.equal(await lines.readLine(), null); // and stays stopped
    } finally {
      close();
    }
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name}: one abort signal stops every reader waiting on it`, async () => {
    const stop = new AbortController();
    const readers = [1, 2, 3].map(() => new Reader(silent, { signal: stop.signal }));
    const finished = new Reader(chunked(enc.encode("x\n"), [2]), { signal: stop.signal });
    assert.deepEqual(await allLines(finished), ["x"]); // done before the abort: left alone
    const waits = readers.map((r) => r.readLine());
    stop.abort();
    assert.deepEqual(await withTimeout(Promise.all(waits), WAIT_MS, "abort"), [null, null, null]);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name} with a signal aborted already reads nothing`, async () => {
    const source = chunked(enc.encode("never read\n"), [100]);
    const reader = new Reader(source, { signal: AbortSignal.abort() });
    assert.equal(await reader.readLine(), null);
    assert.equal(source.reads, 0);
  });
}

for (const [name, Reader] of READERS) {
  Deno.test(`${name}.close ends a waiting readLine with null, and every later one`, async () => {
    const reader = new Reader(silent);
    const waiting = reader.readLine();
    reader.close();
    assert.equal(await waiting, null);
    assert.equal(await reader.readLine(), null);
  });
}

Deno.test("BatchLineReader.readBatch: lines that arrive together come out together", async () => {
  const reader = new BatchLineReader(arriving(["a\nb\nc", "d\ne\n", "f\n", "g"]));
  assert.deepEqual(await allBatches(reader), [["a", "b"], ["cd", "e"], ["f"], ["g"]]);
  // A flood of 1,000 lines comes out in a few batches, as big as the reader's
  // buffer (256 bytes, growing to 64 KiB) takes in one read: a server answers
  // each with one write, not 1,000.
  const many = Array.from({ length: 1000 }, (_, i) => `line ${i}`);
  const data = enc.encode(many.join("\n") + "\n");
  const batches = await allBatches(new BatchLineReader(chunked(data, [data.length])));
  assert.deepEqual(batches.flat(), many);
  assert.ok(batches.length <= 5, `${batches.length} batches`);
});

Deno.test("BatchLineReader.readBatch: a too-long line throws after the batch of lines before it", async () => {
  // Its newline already in: the lines before it are one batch, then the error.
  const withNewline = new BatchLineReader(
    chunked(enc.encode("a\nbb\r\n" + "c".repeat(20) + "\nnever\n"), [100]),
    { maxLine: 10 },
  );
  const got: string[][] = [];
  await assert.rejects(() => allBatches(withNewline, got), LineTooLongError);
  assert.deepEqual(got, [["a", "bb"]]);
  // No newline yet: the lines before it are answered, and the next wait throws.
  const endlessLine = new BatchLineReader(arriving(["x\n" + "A".repeat(5), "A".repeat(30)]), {
    maxLine: 10,
  });
  const got2: string[][] = [];
  await assert.rejects(() => allBatches(endlessLine, got2), LineTooLongError);
  assert.deepEqual(got2, [["x"]]);
});

Deno.test("BatchLineReader.readBatch: a signal that aborts ends a waiting readBatch() with null", async () => {
  const { client, server, close } = await loopbackPair();
  try {
    const stop = new AbortController();
    const lines = new BatchLineReader(server, { signal: stop.signal });
    await writeAll(client, enc.encode("one\n"));
    const first = await withTimeout(lines.readBatch(), WAIT_MS, "the first batch", close);
    assert.deepEqual(first && [...first].map((l) => dec.decode(l)), ["one"]);
    const waiting = lines.readBatch(); // nothing more comes: it waits on the socket
    stop.abort();
    const t0 = performance.now();
    const last = await withTimeout(waiting, WAIT_MS, "readBatch() after abort", close);
    assert.equal(last, null);
    assert.ok(performance.now() - t0 < 100, "ended at once");
  } finally {
    close();
  }
});
