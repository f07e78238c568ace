/**
 * Unit tests for lib/stats.ts: the numbers of a ping-style summary.
 *
 * @module
 */

import assert from "node:assert/strict";
import { lossPercent, summarize } from "../scripts/sensor_client/stats.ts";

Deno.test("summarize: min, avg, max, and p99 by nearest rank; null for no values", () => {
  assert.deepEqual(summarize([3, 1, 2]), { min: 1, avg: 2, max: 3, p99: 3 });
  assert.equal(summarize([]), null);
  const hundred = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
  assert.equal(summarize(hundred)!.p99, 99); // the 99th of 100: a value that occurred
  assert.equal(summarize([5])!.p99, 5);
});

Deno.test("summarize leaves its input as it was", () => {
  const values = [3, 1, 2];
  summarize(values);
  assert.deepEqual(values, [3, 1, 2]);
});

Deno.test("lossPercent: to one decimal, 0 when nothing was sent", () => {
  assert.equal(lossPercent(3, 2), 33.3);
  assert.equal(lossPercent(4, 0), 100);
  assert.equal(lossPercent(4, 4), 0);
  assert.equal(lossPercent(0, 0), 0);
  assert.equal(lossPercent(10_000, 9_999), 0.01); // a real loss never shows as 0
  assert.equal(lossPercent(2001, 2000), 0.05);
});
