/**
 * Unit tests for scripts/sensor_client/inbox.ts: a LineInbox reads all the time, so a line
 * nobody asked for is there when asked, stamped with when it came; it waits
 * with a limit; it shows the bytes of a line begun; the end stays.
 *
 * @module
 */

import assert from "node:assert/strict";
import { LineInbox } from "../scripts/sensor_client/inbox.ts";
import { TruncatedLineError, writeAll } from "../lib/io.ts";
import { arriving, loopbackPair, silent } from "./fakes.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const text = (a: unknown) =>
  a && typeof a === "object" && "line" in a ? dec.decode(a.line as Uint8Array) : a;

Deno.test("LineInbox: lines in order, each copied out; then the end, which stays", async () => {
  const inbox = new LineInbox(arriving(["one\ntw", "o\nthree\n"]));
  assert.equal(text(await inbox.next()), "one");
  assert.equal(text(await inbox.next()), "two");
  assert.equal(text(await inbox.next()), "three");
  assert.deepEqual(await inbox.next(), { end: true });
  assert.deepEqual(await inbox.next(0), { end: true });
});

Deno.test("LineInbox: reads before it is asked, and stamps a line with when it came", async () => {
  const pair = await loopbackPair();
  try {
    const inbox = new LineInbox(pair.client);
    await writeAll(pair.server, enc.encode("early\n"));
    await new Promise((resolve) => setTimeout(resolve, 50)); // the gap is the test: it came before the ask
    const asked = performance.now();
    const arrival = await inbox.next(0); // only what has already come
    assert.ok(arrival && "line" in arrival, "the line was read before it was asked for");
    assert.equal(dec.decode(arrival.line), "early");
    assert.ok(arrival.at < asked - 30, `stamped ${asked - arrival.at} ms before the ask`);
  } finally {
    pair.close();
  }
});

Deno.test("LineInbox.next(ms): undefined when nothing came in time; the read goes on for the next call", async () => {
  const pair = await loopbackPair();
  try {
    const inbox = new LineInbox(pair.client);
    const t0 = performance.now();
    assert.equal(await inbox.next(40), undefined);
    assert.ok(performance.now() - t0 >= 35);
    await writeAll(pair.server, enc.encode("late\n"));
    assert.equal(text(await inbox.next(2000)), "late"); // not lost to the timed-out wait
  } finally {
    pair.close();
  }
});

Deno.test("LineInbox.next(0): nothing yet is undefined at once, and the line that comes later is not lost", async () => {
  const pair = await loopbackPair();
  try {
    const inbox = new LineInbox(pair.client);
    assert.equal(await inbox.next(0), undefined);
    await writeAll(pair.server, enc.encode("later\nand more\n"));
    assert.equal(text(await inbox.next(2000)), "later");
    assert.equal(text(await inbox.next(0)), "and more"); // came with it: already here
  } finally {
    pair.close();
  }
});

Deno.test("LineInbox.partial: the bytes of a line begun, and of one the end cut off", async () => {
  const inbox = new LineInbox(arriving(["pong\npo", "n"]), { requireNewline: true });
  assert.equal(text(await inbox.next()), "pong");
  const end = await inbox.next();
  assert.ok(end && "end" in end && end.error instanceof TruncatedLineError);
  assert.equal(dec.decode(inbox.partial), "pon");
});

Deno.test("LineInbox: a closed connection is an end with its error, never an unhandled rejection", async () => {
  const pair = await loopbackPair();
  const inbox = new LineInbox(pair.client);
  pair.client.close(); // the read under way fails
  const end = await inbox.next(2000);
  assert.ok(end && "end" in end && end.error !== undefined, JSON.stringify(end));
  pair.close();
});

Deno.test("LineInbox: the stop signal ends it as the peer closing would", async () => {
  const stop = new AbortController();
  const inbox = new LineInbox(silent, { signal: stop.signal });
  assert.equal(await inbox.next(10), undefined);
  stop.abort();
  assert.deepEqual(await inbox.next(), { end: true });
});
