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

import { LineReader } from "../lib/lines.ts";
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
  const lines = new LineReader(stream());
  let count = 0;
  while ((await lines.readLine()) !== null) count++;
  if (count !== 65_536) throw new Error(`got ${count} lines`);
});

Deno.bench("LineReader.readBufferedLine batches (as serveLines)", { group: "lines" }, async () => {
  const lines = new LineReader(stream());
  let count = 0;
  while ((await lines.readLine()) !== null) {
    count++;
    while (lines.readBufferedLine() !== null) count++;
  }
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
