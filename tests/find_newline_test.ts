/**
 * Unit tests for lib/find_newline.ts: the word-at-a-time newline search must
 * answer exactly what `indexOf` would, within `[from, to)`, at every alignment.
 *
 * @module
 */

import assert from "node:assert/strict";
import { findNewline } from "../lib/many_clients.ts";

/** What findNewline must return: the first 0x0a in `bytes[from, to)`, or -1. */
function reference(bytes: Uint8Array, from: number, to: number): number {
  for (let i = from; i < to; i++) if (bytes[i] === 0x0a) return i;
  return -1;
}

/** A buffer of `size` bytes (a multiple of 4) with its Uint32Array view. */
function buffer(size: number): { bytes: Uint8Array; words: Uint32Array } {
  const bytes = new Uint8Array(size);
  return { bytes, words: new Uint32Array(bytes.buffer) };
}

/** Checks every `[from, to)` of `bytes`, with the words view and without. */
function checkAllRanges(bytes: Uint8Array, words: Uint32Array, what: string): void {
  for (let from = 0; from <= bytes.length; from++) {
    for (let to = from; to <= bytes.length; to++) {
      const want = reference(bytes, from, to);
      assert.equal(findNewline(bytes, words, from, to), want, `${what}, words, [${from}, ${to})`);
      assert.equal(
        findNewline(bytes, undefined, from, to),
        want,
        `${what}, indexOf, [${from}, ${to})`,
      );
    }
  }
}

Deno.test("findNewline finds one newline at every position, from every start to every end", () => {
  const { bytes, words } = buffer(40);
  bytes.fill(0x61);
  checkAllRanges(bytes, words, "no newline");
  for (let at = 0; at < bytes.length; at++) {
    bytes.fill(0x61);
    bytes[at] = 0x0a;
    checkAllRanges(bytes, words, `newline at ${at}`);
  }
});

Deno.test("findNewline is not fooled by bytes next to 0x0a in value, and finds the first of several", () => {
  // The zero-byte trick works on x = word ^ 0x0a0a0a0a: bytes one bit or one
  // unit away from 0x0a (0x0b, 0x09, 0x1a, 0x4a, 0x8a), and bytes that make the
  // subtraction borrow (0x0b -> x = 0x01, 0xf5 -> x = 0xff), must not count as
  // a newline, nor hide a real one in the next byte.
  const others = [0x00, 0x01, 0x09, 0x0b, 0x1a, 0x4a, 0x8a, 0x8b, 0xf5, 0xfe, 0xff, 0x61];
  let seed = 11;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const { bytes, words } = buffer(36);
  for (let round = 0; round < 60; round++) {
    // Few newlines in most rounds (long stretches for the word loop), many in some.
    const newlineOdds = round % 3 === 0 ? 0.3 : 0.03;
    for (let i = 0; i < bytes.length; i++) {
      bytes[i] = random() < newlineOdds ? 0x0a : others[Math.floor(random() * others.length)];
    }
    checkAllRanges(bytes, words, `round ${round}`);
  }
});

Deno.test("findNewline over a large buffer matches indexOf for every line", () => {
  const { bytes, words } = buffer(64 * 1024);
  bytes.fill(0x78);
  const newlines: number[] = [];
  for (let at = 3, gap = 1; at < bytes.length; at += gap, gap = (gap * 7 + 3) % 997 + 1) {
    bytes[at] = 0x0a;
    newlines.push(at);
  }
  const found: number[] = [];
  for (let from = 0;;) {
    const at = findNewline(bytes, words, from, bytes.length);
    if (at === -1) break;
    found.push(at);
    from = at + 1;
  }
  assert.deepEqual(found, newlines);
  // The end bound is exclusive: a newline at `to` is not found.
  const last = newlines.at(-1)!;
  assert.equal(findNewline(bytes, words, last, last), -1);
  assert.equal(findNewline(bytes, words, last, last + 1), last);
});
