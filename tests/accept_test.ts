/**
 * Unit tests for lib/accept.ts: a client gone before accept() costs no pause
 * and no log line; running out of file descriptors pauses, doubling, logs at
 * most once a second, and says when accepting works again.
 *
 * @module
 */

import assert from "node:assert/strict";
import { AcceptFailures } from "../lib/accept.ts";

const failure = (code: string, message = code) => Object.assign(new Error(message), { code });

Deno.test("AcceptFailures: a client that reset in the backlog is no failure: no pause, no log", async () => {
  const log: string[] = [];
  const failures = new AcceptFailures((line) => log.push(line));
  const t0 = performance.now();
  for (const code of ["ENOTCONN", "ECONNABORTED", "ECONNRESET", "EPROTO"]) {
    for (let i = 0; i < 50; i++) await failures.pauseAfter(failure(code));
  }
  failures.recovered();
  assert.ok(performance.now() - t0 < 500, "no pause (200 pauses of 5 ms would take 1 s)");
  assert.deepEqual(log, []);
});

Deno.test("AcceptFailures: out of file descriptors, it pauses (5, 10, 20 ms...), reports once, then 'accepting again'", async () => {
  const log: string[] = [];
  const failures = new AcceptFailures((line) => log.push(line));
  const t0 = performance.now();
  for (let i = 0; i < 4; i++) await failures.pauseAfter(failure("EMFILE", "Too many open files"));
  assert.ok(performance.now() - t0 >= 5 + 10 + 20 + 40 - 4, "the pauses double");
  assert.deepEqual(log, [
    "accept failed 1 time(s): Too many open files; pausing 5 ms for clients to leave",
  ]);
  failures.recovered();
  failures.recovered(); // once is enough
  assert.deepEqual(log.slice(1), ["accepting again"]);
  // Failing again within the second: counted, not logged.
  await failures.pauseAfter(failure("EMFILE", "Too many open files"));
  assert.equal(log.length, 2);
});
