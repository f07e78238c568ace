/**
 * How bytes from the network and addresses are shown to a person: a peer's
 * bytes escaped so that they cannot drive the terminal ({@linkcode showBytes}),
 * `HOST:PORT` with IPv6 in brackets ({@linkcode formatAddress}), and colour
 * only when a person is watching ({@linkcode paint}).
 *
 * @example
 * ```ts
 * import { showBytes } from "./text.ts";
 * console.log(showBytes(new TextEncoder().encode("hi\x1b[2J"))); // hi\x1b[2J
 * ```
 *
 * @module
 */

import { styleText } from "node:util";

/**
 * Formats an address as `HOST:PORT`, with IPv6 hosts in brackets.
 *
 * @example
 * ```ts
 * import { formatAddress } from "./text.ts";
 * console.log(formatAddress({ transport: "tcp", hostname: "::1", port: 80 })); // [::1]:80
 * ```
 */
export function formatAddress(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return String(addr.transport);
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `${host}:${addr.port}`;
}

/**
 * Colours text for a person at a terminal; plain when stdout is a pipe or
 * `NO_COLOR` is set. Needs no permission.
 *
 * @example
 * ```ts
 * import { paint } from "./text.ts";
 * console.log(paint("green", "OK"));
 * ```
 */
export function paint(style: Parameters<typeof styleText>[0], text: string): string {
  return COLOR ? styleText(style, text, { validateStream: false }) : text;
}

const COLOR = Deno.stdout.isTerminal() && !Deno.noColor;

/**
 * A peer's bytes made safe to print: UTF-8 text as it is, but every control
 * byte shown escaped (`\x1b`, `\r`, `\n`, `\t`), bytes that are not UTF-8
 * as `\xNN`, and the invisible characters that reorder or hide text (such as
 * U+202E) as `\u{202e}`. A peer can then neither move the cursor, clear the
 * screen, retitle the window, nor overwrite a line to fake a log entry.
 * Use it wherever bytes from the network reach a terminal or a log; the
 * bytes on the wire stay exact. With `maxBytes`, only about that many bytes
 * are shown (a character is not cut, so up to 3 more), then `... (N bytes)`:
 * a log line stays a line.
 *
 * @example
 * ```ts
 * import { showBytes } from "./text.ts";
 * console.log(showBytes(new Uint8Array([0x68, 0x69, 0x1b, 0x5b, 0x32, 0x4a, 0x0d, 0xff])));
 * // hi\x1b[2J\r\xff
 * console.log(showBytes(new TextEncoder().encode("héllo ✓"))); // héllo ✓
 * ```
 */
export function showBytes(bytes: Uint8Array, maxBytes = Infinity): string {
  let out = "";
  const end = Math.min(bytes.length, maxBytes);
  for (let i = 0; i < end;) {
    const b = bytes[i];
    if (b >= 0x20 && b < 0x7f) {
      out += String.fromCharCode(b);
      i++;
      continue;
    }
    const length = utf8Length(bytes, i);
    if (length === 0) {
      out += escapeCode(b); // a control byte, or a byte that is not UTF-8
      i++;
      continue;
    }
    const char = UTF8.decode(bytes.subarray(i, i + length));
    const code = char.codePointAt(0)!;
    out += code <= 0x9f || INVISIBLE.test(char) ? `\\u{${code.toString(16)}}` : char;
    i += length;
  }
  return end < bytes.length ? `${out}... (${bytes.length} bytes)` : out;
}

/** How many bytes of a peer's message a server's log line shows. */
export const LOG_PREVIEW = 200;

const UTF8 = new TextDecoder("utf-8", { ignoreBOM: true }); // a BOM is shown, not dropped
/** Format characters that reorder, join or hide text, and line/paragraph separators. */
const INVISIBLE = /[\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/u;
const NAMED_ESCAPES: Record<number, string> = { 0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r" };

function escapeCode(b: number): string {
  return NAMED_ESCAPES[b] ?? `\\x${b.toString(16).padStart(2, "0")}`;
}

/** The length of the valid UTF-8 sequence at `bytes[i]` (2-4), or 0 for ASCII or invalid. */
function utf8Length(bytes: Uint8Array, i: number): number {
  const b = bytes[i];
  const [length, low, high] = b >= 0xc2 && b <= 0xdf
    ? [2, 0x80, 0xbf]
    : b === 0xe0
    ? [3, 0xa0, 0xbf] // no overlong forms
    : b === 0xed
    ? [3, 0x80, 0x9f] // no UTF-16 surrogates
    : b >= 0xe1 && b <= 0xef
    ? [3, 0x80, 0xbf]
    : b === 0xf0
    ? [4, 0x90, 0xbf]
    : b >= 0xf1 && b <= 0xf3
    ? [4, 0x80, 0xbf]
    : b === 0xf4
    ? [4, 0x80, 0x8f] // nothing past U+10FFFF
    : [0, 0, 0];
  if (length === 0 || i + length > bytes.length) return 0;
  if (bytes[i + 1] < low || bytes[i + 1] > high) return 0;
  for (let k = 2; k < length; k++) if ((bytes[i + k] & 0xc0) !== 0x80) return 0;
  return length;
}

/** `1 client`, `2 clients`. */
export function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
