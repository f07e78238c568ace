/**
 * lib_bench.ts — `deno task bench:lib`: the lib's framing and exact reads
 * against the same work hand-inlined, on in-memory streams (no sockets, so
 * only the JavaScript is measured).
 *
 * Run:
 *   deno bench bench/lib_bench.ts
 *   deno task bench:lib          (same thing)
 *
 * @module
 */

import { BatchLineReader } from "../lib/many_clients.ts";
import { ReplyBatch } from "../lib/many_clients.ts";
import { readExact } from "../lib/io.ts";

const LINE = new TextEncoder().encode("a".repeat(63) + "\n");
const CHUNK = new Uint8Array(64 * 1024 - (64 * 1024) % 64);
for (let i = 0; i < CHUNK.length; i += 64) CHUNK.set(LINE, i);
const CHUNKS = 64; // 4 MiB, 65,536 lines per run

/** A stream of CHUNKS chunks of 64-byte lines, each read filling what it can. */
function stream() {
  let chunk = 0;
  let at = 0;
  return {
    read(p: Uint8Array): Promise<number | null> {
      if (chunk === CHUNKS) return Promise.resolve(null);
      const n = Math.min(p.length, CHUNK.length - at);
      p.set(CHUNK.subarray(at, at + n));
      at += n;
      if (at === CHUNK.length) {
        chunk++;
        at = 0;
      }
      return Promise.resolve(n);
    },
  };
}

Deno.bench("LineReader.readLine", { group: "lines", baseline: true }, async () => {
  const lines = new BatchLineReader(stream());
  let count = 0;
  while ((await lines.readLine()) !== null) count++;
  if (count !== 65_536) throw new Error(`got ${count} lines`);
});

Deno.bench("LineReader.readBatch (as the line servers)", { group: "lines" }, async () => {
  const lines = new BatchLineReader(stream());
  let count = 0;
  for (let batch; (batch = await lines.readBatch()) !== null;) count += [...batch].length;
  if (count !== 65_536) throw new Error(`got ${count} lines`);
});

Deno.bench("hand-inlined: indexOf over a 64 KiB buffer", { group: "lines" }, async () => {
  const source = stream();
  const buf = new Uint8Array(64 * 1024);
  let start = 0;
  let end = 0;
  let count = 0;
  while (true) {
    if (start > 0) {
      buf.copyWithin(0, start, end);
      end -= start;
      start = 0;
    }
    const n = await source.read(buf.subarray(end));
    if (n === null) break;
    end += n;
    for (let i = buf.indexOf(10, start); i !== -1 && i < end; i = buf.indexOf(10, start)) {
      buf.subarray(start, i); // the line
      count++;
      start = i + 1;
    }
  }
  if (count !== 65_536) throw new Error(`got ${count} lines`);
});

/** The stream above, plus a write side that counts what it is given. */
function duplex() {
  return Object.assign(stream(), {
    written: 0,
    write(p: Uint8Array): Promise<number> {
      this.written += p.length;
      return Promise.resolve(p.length);
    },
    close() {},
  });
}

const OK = new TextEncoder().encode("OK ... ");
const NL = new TextEncoder().encode("\n");
const REPLIES = 65_536 * (OK.length + LINE.length);

Deno.bench(
  "LineReader.readBatch + ReplyBatch: OK ... <line> for each line (as the line servers)",
  { group: "serve", baseline: true },
  async () => {
    const conn = duplex();
    const lines = new BatchLineReader(conn);
    const replies = new ReplyBatch(conn);
    for (let batch; (batch = await lines.readBatch()) !== null;) {
      for (const line of batch) replies.add(OK, line, NL);
      await replies.send();
    }
    if (conn.written !== REPLIES) throw new Error(`wrote ${conn.written}`);
  },
);

Deno.bench(
  "hand-inlined: indexOf, parts, one concat and write per read",
  { group: "serve" },
  async () => {
    const conn = duplex();
    const buf = new Uint8Array(64 * 1024);
    let start = 0;
    let end = 0;
    while (true) {
      if (start > 0) {
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      const n = await conn.read(buf.subarray(end));
      if (n === null) break;
      end += n;
      const parts: Uint8Array[] = [];
      for (let i = buf.indexOf(10, start); i !== -1 && i < end; i = buf.indexOf(10, start)) {
        parts.push(OK, buf.subarray(start, i), NL);
        start = i + 1;
      }
      const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      for (let off = 0; off < out.length;) off += await conn.write(out.subarray(off));
    }
    if (conn.written !== REPLIES) throw new Error(`wrote ${conn.written}`);
  },
);

Deno.bench("readExact(32) x 4096", { group: "exact", baseline: true }, async () => {
  const source = stream();
  for (let i = 0; i < 4096; i++) await readExact(source, 32);
});

Deno.bench("hand-inlined exact read x 4096", { group: "exact" }, async () => {
  const source = stream();
  for (let i = 0; i < 4096; i++) {
    const buf = new Uint8Array(32);
    let got = 0;
    while (got < 32) {
      const n = await source.read(buf.subarray(got));
      if (n === null) throw new Error("eof");
      got += n;
    }
  }
});
