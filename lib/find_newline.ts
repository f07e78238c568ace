/**
 * Speed part, safe to skip when learning: finding the `\n` in a buffer four
 * bytes at a time. {@linkcode LineReader} (lines.ts) would be just as correct
 * with `bytes.indexOf(0x0a, from)`; this is here because it pays on the
 * benchmark's floods of 16-byte lines. On 2026-12-03, `deno task bench
 * --only flood` ran this code and the same code with `indexOf` in this
 * function's place, side by side (`--baseline` of a commit that made only
 * that change): with `indexOf`, the flood's replies per second fell to
 * 0.90x (select, closed loop) and 0.60x (open loop), 0.91x and 0.68x (the
 * pool), 0.83x and 0.74x (sensor_server).
 *
 * @example
 * ```ts
 * import { findNewline } from "./find_newline.ts";
 * const bytes = new TextEncoder().encode("hello\nworld\n");
 * console.log(findNewline(bytes, undefined, 0, bytes.length)); // 5
 * ```
 *
 * @module
 */

const NEWLINE = 0x0a;

/**
 * Index of the first `\n` in `bytes[from, to)`, or -1.
 *
 * `words` is a `Uint32Array` over the same memory as `bytes` (which must then
 * start at offset 0 of its buffer), or `undefined` to use `indexOf` (best for
 * short buffers). A word holds a newline byte exactly when
 * `x = word ^ 0x0a0a0a0a` holds a zero byte, which
 * `(x - 0x01010101) & ~x & 0x80808080` detects.
 *
 * @example
 * ```ts
 * import { findNewline } from "./find_newline.ts";
 * const bytes = new Uint8Array(64).fill(0x61);
 * bytes[41] = 0x0a;
 * console.log(findNewline(bytes, new Uint32Array(bytes.buffer), 3, 64)); // 41
 * ```
 */
export function findNewline(
  bytes: Uint8Array,
  words: Uint32Array | undefined,
  from: number,
  to: number,
): number {
  if (words === undefined) {
    const found = bytes.indexOf(NEWLINE, from);
    return found < to ? found : -1;
  }
  let i = from;
  for (; i < to && (i & 3) !== 0; i++) if (bytes[i] === NEWLINE) return i;
  for (let w = i >> 2, last = to >> 2; w < last; w++) {
    const x = words[w] ^ 0x0a0a0a0a;
    if (((x - 0x01010101) & ~x & 0x80808080) !== 0) break; // a newline in this word
    i = (w + 1) << 2;
  }
  for (; i < to; i++) if (bytes[i] === NEWLINE) return i;
  return -1;
}
