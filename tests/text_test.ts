/**
 * Unit tests for lib/text.ts: how a peer's bytes and addresses are shown.
 *
 * @module
 */

import assert from "node:assert/strict";
import { styleText } from "node:util";
import { formatAddress, LOG_PREVIEW, paint, showBytes } from "../lib/text.ts";

const enc = new TextEncoder();

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
  // A peer's own backslash is doubled: its four characters `\x1b` cannot pass for an escaped ESC.
  assert.equal(showBytes(enc.encode(String.raw`\x1b`)), String.raw`\\x1b`);
  assert.notEqual(showBytes(enc.encode(String.raw`\x1b`)), showBytes(enc.encode("\x1b")));
});

Deno.test("showBytes: past U+10FFFF is not UTF-8; a preview of exactly the length adds nothing", () => {
  assert.equal(showBytes(new Uint8Array([0xf4, 0x90, 0x80, 0x80])), String.raw`\xf4\x90\x80\x80`);
  assert.equal(showBytes(new Uint8Array([0xf4, 0x8f, 0xbf, 0xbf])), "\u{10ffff}");
  assert.equal(showBytes(enc.encode("12345"), 5), "12345");
  assert.equal(showBytes(new Uint8Array(0)), "");
  assert.equal(LOG_PREVIEW, 200);
});

Deno.test("formatAddress brackets IPv6", () => {
  assert.equal(formatAddress({ transport: "tcp", hostname: "127.0.0.1", port: 1 }), "127.0.0.1:1");
  assert.equal(formatAddress({ transport: "tcp", hostname: "::1", port: 2 }), "[::1]:2");
  assert.equal(formatAddress({ transport: "unix", path: "/tmp/s" }), "unix");
});

Deno.test("paint colours only for a person at a terminal", () => {
  const painted = paint("green", "OK");
  if (Deno.stdout.isTerminal() && !Deno.noColor) {
    assert.equal(painted, styleText("green", "OK", { validateStream: false }));
  } else {
    assert.equal(painted, "OK"); // a pipe (as under CI), or NO_COLOR
  }
});
