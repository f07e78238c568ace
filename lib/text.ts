/**
 * How a peer's bytes and addresses are shown to a person: bytes escaped so that they cannot drive
 * the terminal, `HOST:PORT` with IPv6 in brackets, colour only at a terminal.
 *
 * @example
 * ```ts
 * import { formatAddress, showBytes } from "./text.ts";
 * console.log(showBytes(new TextEncoder().encode("hi\x1b[2J"))); // hi\x1b[2J
 * console.log(formatAddress({ transport: "tcp", hostname: "::1", port: 80 })); // [::1]:80
 * ```
 *
 * @module
 */

import { styleText } from "node:util";

/** `HOST:PORT`, with an IPv6 host in brackets. */
export function formatAddress(addr: Deno.Addr): string {
  if (addr.transport !== "tcp" && addr.transport !== "udp") return String(addr.transport);
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `${host}:${addr.port}`;
}

const COLOR = {
  stdout: Deno.stdout.isTerminal() && !Deno.noColor,
  stderr: Deno.stderr.isTerminal() && !Deno.noColor,
};

/** `text` in colour when `to` (stdout unless told) is a terminal; plain in a pipe or with `NO_COLOR`. */
export function paint(
  style: Parameters<typeof styleText>[0],
  text: string,
  to: "stdout" | "stderr" = "stdout",
): string {
  return COLOR[to] ? styleText(style, text, { validateStream: false }) : text;
}

/**
 * A peer's bytes made safe to print: UTF-8 text as it is; control bytes, bytes that are not UTF-8,
 * and the invisible characters that reorder or hide text (U+202E...) escaped (`\x1b`, `\r`,
 * `\xff`, `\u{202e}`), a backslash doubled (unless told: a text that quotes escaped bytes). So a
 * peer can neither move the cursor nor fake a log line or an escape. With `maxBytes`, about that
 * many bytes are shown, then `... (N bytes)`.
 */
export function showBytes(bytes: Uint8Array, maxBytes = Infinity, doubleBackslash = true): string {
  let out = "";
  const end = Math.min(bytes.length, maxBytes);
  for (let i = 0; i < end;) {
    const b = bytes[i];
    if (b >= 0x20 && b < 0x7f) {
      out += b === 0x5c && doubleBackslash ? "\\\\" : String.fromCharCode(b); // a peer's `\x1b` is not an ESC
      i++;
      continue;
    }
    // A lead byte says how long its sequence is; the strict decoder refuses overlong forms,
    // surrogates and anything past U+10FFFF.
    const n = sequenceLength(b);
    let char: string | undefined;
    try {
      if (n > 0 && i + n <= bytes.length) char = STRICT_UTF8.decode(bytes.subarray(i, i + n));
    } catch { /* not UTF-8 */ }
    if (char === undefined) {
      out += ESCAPES[b] ?? `\\x${b.toString(16).padStart(2, "0")}`;
      i++;
      continue;
    }
    const code = char.codePointAt(0)!;
    out += code <= 0x9f || INVISIBLE.test(char) ? `\\u{${code.toString(16)}}` : char;
    i += n;
  }
  return end < bytes.length ? `${out}... (${bytes.length} bytes)` : out;
}

/** How many bytes the UTF-8 sequence that starts with `b` has; 0 if `b` cannot start one. */
function sequenceLength(b: number): number {
  if (b >= 0xc2 && b <= 0xdf) return 2;
  if (b >= 0xe0 && b <= 0xef) return 3;
  if (b >= 0xf0 && b <= 0xf4) return 4;
  return 0;
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const INVISIBLE = /[\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/u;
const ESCAPES: Record<number, string> = { 0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r" };

/** How many bytes of a peer's message a server's log line shows. */
export const LOG_PREVIEW = 200;

/** `1 client`, `2 clients`. */
export function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}
