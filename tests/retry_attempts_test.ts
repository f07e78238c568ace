/**
 * Unit tests for retry.ts's --attempts flag the retrying clients
 * share, and the line each failed attempt prints.
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseCli } from "../lib/cli.ts";
import { ATTEMPTS_FLAG, connectWithRetry, reportAttempt } from "../lib/retry.ts";

Deno.test("ATTEMPTS_FLAG: 1 to 100, default 5", () => {
  const parse = (args: string[]) =>
    parseCli({ name: "t", summary: "", options: { attempts: ATTEMPTS_FLAG }, args }).attempts;
  assert.equal(parse([]), 5);
  assert.equal(parse(["--attempts", "100"]), 100);
});

Deno.test("reportAttempt: 'attempt N/M failed: why; retrying in D ms', and no retry after the last", async () => {
  const lines: string[] = [];
  const refuse = () => Promise.reject(new Deno.errors.ConnectionRefused("Connection refused"));
  await assert.rejects(connectWithRetry({
    hostname: "127.0.0.1",
    port: 9,
    attempts: 2,
    baseDelayMs: 1,
    connect: refuse,
    onRetry: reportAttempt(2, (line) => lines.push(line)),
  }));
  assert.equal(lines.length, 2);
  assert.match(lines[0], /^attempt 1\/2 failed: Connection refused; retrying in \d+ ms$/);
  assert.equal(lines[1], "attempt 2/2 failed: Connection refused");
});
