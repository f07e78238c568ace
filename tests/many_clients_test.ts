/**
 * Unit tests for lib/many_clients.ts: ReplyBatch answers a batch of lines with one
 * write, copies what it is given, keeps batches apart, and counts a write
 * that gets bytes out as progress. Also the line server's loop as the scripts
 * write it (LineReader.batches + ReplyBatch).
 *
 * @module
 */

import { IdleClock, LINE_TOO_LONG } from "../lib/server.ts";
import assert from "node:assert/strict";
import { concatBytes, LineTooLongError, writeAll, type Writer } from "../lib/io.ts";
import { BatchLineReader } from "../lib/many_clients.ts";
import { ReplyBatch } from "../lib/many_clients.ts";
import { chunked } from "./fakes.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const OK = enc.encode("OK ... ");
const NL = enc.encode("\n");

/** A writer that records what each write() was given, as text, at the moment of the call. */
function recorder(accept = Infinity): Writer & { writes: string[]; text(): string } {
  const writes: string[] = [];
  return {
    writes,
    write(p: Uint8Array) {
      const n = Math.min(accept, p.length);
      writes.push(dec.decode(p.subarray(0, n)));
      return Promise.resolve(n);
    },
    text: () => writes.join(""),
  };
}

/** A clock that only counts restarts (no timer runs). */
class CountingClock extends IdleClock {
  restarts = 0;
  constructor() {
    super(1000, () => assert.fail("never idle"));
  }
  override restart(): void {
    this.restarts++;
  }
}

Deno.test("ReplyBatch sends a batch with one write, in order, and nothing for an empty batch", async () => {
  const conn = recorder();
  const replies = new ReplyBatch(conn);
  for (const line of ["one", "two", "three"]) replies.add(OK, enc.encode(line), NL);
  await replies.send();
  assert.deepEqual(conn.writes, ["OK ... one\nOK ... two\nOK ... three\n"]);
  await replies.send(); // nothing added since
  assert.equal(conn.writes.length, 1);
  replies.add(enc.encode("four\n"));
  await replies.send();
  assert.deepEqual(conn.writes, ["OK ... one\nOK ... two\nOK ... three\n", "four\n"]);
});

Deno.test("ReplyBatch copies at add(): a line that is a view into a reader's buffer may change after", async () => {
  const conn = recorder();
  const replies = new ReplyBatch(conn);
  const buffer = enc.encode("first line that is longer than sixteen bytes");
  replies.add(buffer.subarray(0, 5), NL, buffer); // a short part (copied by hand) and a long one
  buffer.fill(0x58);
  await replies.send();
  assert.deepEqual(conn.writes, ["first\nfirst line that is longer than sixteen bytes"]);
});

Deno.test("ReplyBatch: the shared small buffers never leak bytes from one batch into another", async () => {
  // Sequential batches of one connection: a short batch after a longer one
  // must not carry the longer one's tail.
  const conn = recorder();
  const replies = new ReplyBatch(conn);
  replies.add(enc.encode("a long first reply, far longer than the next\n"));
  await replies.send();
  replies.add(enc.encode("b\n"));
  await replies.send();
  assert.deepEqual(conn.writes, ["a long first reply, far longer than the next\n", "b\n"]);

  // Two connections at once: a buffer still being written to a slow peer
  // must not be handed to another connection's batch meanwhile.
  let finishSlow!: () => void;
  let slowBytes!: Uint8Array; // the very bytes the slow write was given, not a copy
  const slow: Writer = {
    write(p) {
      slowBytes = p;
      return new Promise((resolve) => finishSlow = () => resolve(p.length));
    },
  };
  const slowReplies = new ReplyBatch(slow);
  slowReplies.add(enc.encode("for the slow peer\n"));
  const slowSending = slowReplies.send();
  const fast = recorder();
  const fastReplies = new ReplyBatch(fast);
  const expected: string[] = [];
  for (let i = 0; i < 20; i++) {
    expected.push(`fast reply ${i}\n`);
    fastReplies.add(enc.encode(expected[i]));
    await fastReplies.send();
  }
  assert.equal(dec.decode(slowBytes), "for the slow peer\n");
  finishSlow();
  await slowSending;
  assert.deepEqual(fast.writes, expected);
});

Deno.test("ReplyBatch: a batch that outgrows a small buffer, and a big batch, arrive whole", async () => {
  const conn = recorder();
  const replies = new ReplyBatch(conn);
  const lines = Array.from({ length: 2000 }, (_, i) => `reply ${i}\n`);
  for (const line of lines.slice(0, 30)) replies.add(enc.encode(line)); // past 256 bytes
  await replies.send();
  for (const line of lines) replies.add(enc.encode(line)); // past the big-batch size
  await replies.send(); // (and then yields to other connections)
  for (const line of lines.slice(0, 3)) replies.add(enc.encode(line));
  await replies.send();
  assert.deepEqual(conn.writes, [
    lines.slice(0, 30).join(""),
    lines.join(""),
    lines.slice(0, 3).join(""),
  ]);
});

Deno.test("ReplyBatch: a reply added while a big batch is being written does not touch its bytes", async () => {
  let captured: Uint8Array | undefined;
  let finish = () => {};
  const slowPeer = {
    write(p: Uint8Array) {
      captured = p; // the bytes the runtime is still sending
      return new Promise<number>((resolve) => finish = () => resolve(p.length));
    },
  };
  const replies = new ReplyBatch(slowPeer);
  replies.add(new Uint8Array(5000).fill(0x61)); // big (>= 4096): its buffer is kept for reuse
  const sending = replies.send();
  replies.add(new TextEncoder().encode("XYZ")); // queued meanwhile (chat's fan-out does this)
  assert.deepEqual(captured, new Uint8Array(5000).fill(0x61));
  finish();
  await sending;
  const second = replies.send();
  finish();
  await second;
  assert.equal(new TextDecoder().decode(captured), "XYZ");
});

Deno.test("ReplyBatch: every write that gets bytes out restarts the progress clock", async () => {
  const clock = new CountingClock();
  const conn = recorder(4); // a peer that takes 4 bytes per write
  const replies = new ReplyBatch(conn, clock);
  replies.add(enc.encode("0123456789"));
  await replies.send();
  assert.equal(conn.text(), "0123456789");
  assert.equal(clock.restarts, 3); // 4 + 4 + 2 bytes
  await replies.send(); // an empty batch writes nothing and is no progress
  assert.equal(clock.restarts, 3);
});

Deno.test("A line server's loop: every line answered in order, a batch per write, then ERR line too long", async () => {
  const input = enc.encode("a\nbb\r\n" + "c".repeat(20) + "\nnever\n");
  const writes: Uint8Array[] = [];
  const conn = {
    ...chunked(input, [input.length]),
    write(p: Uint8Array) {
      writes.push(p.slice());
      return Promise.resolve(p.length);
    },
  };
  // The per-client loop of socket_server and its siblings.
  const serve = async () => {
    const lines = new BatchLineReader(conn, { maxLine: 10 });
    const replies = new ReplyBatch(conn);
    try {
      for (let batch; (batch = await lines.readBatch()) !== null;) {
        for (const line of batch) replies.add(OK, line, NL);
        await replies.send();
      }
    } catch (err) {
      if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG);
      throw err;
    }
  };
  await assert.rejects(serve, LineTooLongError);
  assert.equal(dec.decode(concatBytes(writes)), "OK ... a\nOK ... bb\nERR line too long\n");
  assert.equal(writes.length, 2); // both replies in one write, then the error
});

Deno.test("A line server's loop answers a pipelined flood with far fewer writes than lines", async () => {
  const lines = Array.from({ length: 5000 }, (_, i) => `m${i}`);
  const input = enc.encode(lines.join("\n") + "\n");
  const conn = { ...chunked(input, [input.length]), ...recorder() };
  const reader = new BatchLineReader(conn);
  const replies = new ReplyBatch(conn);
  for (let batch; (batch = await reader.readBatch()) !== null;) {
    for (const line of batch) replies.add(OK, line, NL);
    await replies.send();
  }
  assert.equal(conn.text(), lines.map((l) => `OK ... ${l}\n`).join(""));
  assert.ok(conn.writes.length <= 10, `${conn.writes.length} writes for ${lines.length} lines`);
});
