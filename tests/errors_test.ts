/**
 * The error classes, and every sentence the collection says about a
 * failure. They live beside what throws or says them: io.ts (reads),
 * retry.ts (connects), server.ts (a server's log and `ERR` replies), cli.ts
 * (a script's one `error:` line).
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  ConnectTimeoutError,
  RetriesExhaustedError,
  RetriesExhaustedError as RetriesExhaustedFromRetry,
} from "../lib/retry.ts";
import { CliError, describeError } from "../lib/cli.ts";
import { explainClientError, LINE_TOO_LONG, listenErrorText, SERVER_BUSY } from "../lib/server.ts";
import {
  LineTooLongError,
  ReadTimeoutError,
  TruncatedLineError,
  UnexpectedEofError,
} from "../lib/io.ts";
import { plural } from "../lib/text.ts";

const dec = new TextDecoder();
const refused = () => new Deno.errors.ConnectionRefused("Connection refused (os error 111)");

Deno.test("the ERR replies on the wire are one line each", () => {
  assert.equal(dec.decode(LINE_TOO_LONG), "ERR line too long\n");
  assert.equal(dec.decode(SERVER_BUSY), "ERR server busy\n");
});

Deno.test("plural counts in words", () => {
  assert.equal(plural(0, "client"), "0 clients");
  assert.equal(plural(1, "client"), "1 client");
  assert.equal(plural(2, "byte"), "2 bytes");
});

Deno.test("the error classes carry their numbers, names and messages", () => {
  const cli = new CliError("bad");
  assert.equal(cli.exitCode, 1);
  assert.equal(new CliError("usage", 2).exitCode, 2);
  assert.equal(cli.name, "CliError");

  const eof = new UnexpectedEofError(7, 32);
  assert.deepEqual([eof.received, eof.expected, eof.name], [7, 32, "UnexpectedEofError"]);
  assert.equal(eof.message, "connection closed after 7 of 32 bytes");

  const timeout = new ReadTimeoutError(2500);
  assert.deepEqual([timeout.timeoutMs, timeout.message], [2500, "no data for 2.5 s"]);

  const long = new LineTooLongError(65536);
  assert.deepEqual([long.maxLine, long.message], [65536, "line longer than 65536 bytes"]);

  const cut = new TruncatedLineError(new Uint8Array([0x4f]));
  assert.equal(cut.message, "the stream ended in the middle of a line (1 byte without a newline)");
  assert.match(new TruncatedLineError(new Uint8Array(3)).message, /\(3 bytes without/);
});

Deno.test("ConnectTimeoutError: a TimedOut that names what got no answer, and the flag", () => {
  const err = new ConnectTimeoutError("127.0.0.1:50000", 2000);
  assert.ok(err instanceof Deno.errors.TimedOut);
  assert.equal(err.message, "no answer from 127.0.0.1:50000 within 2 s (--timeout)");
  assert.equal(describeError(err, "127.0.0.1:50000"), err.message);
  assert.equal(err.timeoutMs, 2000);
});

Deno.test("RetriesExhaustedError: a refusal asks whether the server runs and adds the hint", () => {
  const err = new RetriesExhaustedError("127.0.0.1:9000", 5, refused(), "start it with X");
  assert.equal(
    err.message,
    "connection refused by 127.0.0.1:9000 after 5 attempts: is the server running? start it with X",
  );
  assert.equal(err.attempts, 5);
  assert.ok(err.cause instanceof Deno.errors.ConnectionRefused);
  const once = new RetriesExhaustedError("[::1]:1", 1, refused());
  assert.equal(
    once.message,
    "connection refused by [::1]:1 after 1 attempt: is the server running?",
  );
  const other = new RetriesExhaustedError("h:1", 2, new Deno.errors.TimedOut("no answer"), "hint");
  assert.equal(other.message, "could not connect to h:1 after 2 attempts: no answer");
  // A connect attempt that timed out: the message names the target once, and the flag.
  const late = new RetriesExhaustedError("h:1", 3, new ConnectTimeoutError("h:1", 2000));
  assert.equal(
    late.message,
    "could not connect to h:1 after 3 attempts: no answer within 2 s (--timeout)",
  );
  // retry.ts re-exports the same class.
  assert.equal(RetriesExhaustedFromRetry, RetriesExhaustedError);
});

Deno.test("listenErrorText says why a port cannot be listened on, and what to do", () => {
  const fix = "stop the other server, or pick another --port (--port 0 takes a free one)";
  assert.equal(
    listenErrorText(new Deno.errors.AddrInUse("Address in use"), "127.0.0.1", 8888),
    `port 8888 is already in use on 127.0.0.1: ${fix}`,
  );
  assert.equal(
    listenErrorText(new Deno.errors.NotCapable('Requires net access to "10.0.0.1:80"'), "::", 80),
    "no permission to listen on [::]:80: run with --allow-net=[::]",
  );
  assert.equal(
    listenErrorText(new Deno.errors.PermissionDenied("Permission denied"), "0.0.0.0", 80),
    "no permission to listen on 0.0.0.0:80: run with --allow-net=0.0.0.0",
  );
  assert.equal(
    listenErrorText(new Deno.errors.AddrNotAvailable("Cannot assign"), "192.0.2.1", 8888),
    "cannot listen on 192.0.2.1:8888: 192.0.2.1 is not an address of this machine",
  );
  assert.equal(
    listenErrorText(new Error("something odd\nat line 2"), "::1", 1),
    "cannot listen on [::1]:1: something odd",
  );
  assert.equal(listenErrorText("not an Error", "h", 2), "cannot listen on h:2: not an Error");
});

Deno.test("describeError turns Deno errors into advice", () => {
  assert.match(
    describeError(new Deno.errors.ConnectionRefused("x"), "127.0.0.1:1"),
    /refused by 127\.0\.0\.1:1: is the server running/,
  );
  assert.match(
    describeError(
      new Error("failed to lookup address information: Name or service not known"),
      "nope:80",
    ),
    /cannot resolve host nope:80/,
  );
  assert.match(
    describeError(
      new Deno.errors.NotCapable(
        'Requires net access to "10.0.0.1:80", run again with the --allow-net flag',
      ),
    ),
    /--allow-net=10\.0\.0\.1/,
  );
});

Deno.test("describeError: one line for every kind of failure, with and without a target", () => {
  const cases: [unknown, string, string][] = [
    [new CliError("as written", 2), "x:1", "as written"],
    [new Deno.errors.AddrInUse("in use"), "x:1", "address x:1 is already in use: stop the other"],
    [
      new Deno.errors.AddrNotAvailable("n/a"),
      "x:1",
      "cannot use address x:1: it is not an address",
    ],
    [refused(), "", "connection refused: is the server running?"],
    [new Deno.errors.ConnectionReset("reset"), "x:1", "connection reset by peer x:1"],
    [new Deno.errors.TimedOut("t"), "x:1", "timed out x:1"],
    [new ReadTimeoutError(2000), "x:1", "no reply from x:1 within 2 s (--timeout)"],
    [new ReadTimeoutError(500), "", "no reply within 0.5 s (--timeout)"],
    [
      new Deno.errors.NotCapable(
        'Requires net access to "[::1]:8888", run again with the --allow-net flag',
      ),
      "",
      'permission missing: Requires net access to "[::1]:8888" (run with --allow-net=[::1])',
    ],
    [new Error("nodename nor servname provided, or not known"), "", "cannot resolve host: check"],
    [new Error("first line\nsecond line"), "", "first line"],
    [new Error("odd failure"), "x:1", "odd failure (x:1)"],
    ["a thrown string", "", "a thrown string"],
  ];
  for (const [err, target, start] of cases) {
    const text = describeError(err, target);
    assert.ok(text.startsWith(start), `${String(err)} -> ${text}`);
    assert.ok(!text.includes("\n"), `one line: ${text}`);
  }
});

Deno.test("explainClientError says in a few words how a client's connection ended", () => {
  assert.equal(
    explainClientError(new Deno.errors.ConnectionReset("x")),
    "connection reset by client",
  );
  assert.equal(
    explainClientError(new Deno.errors.BrokenPipe("x")),
    "client went away before the reply was sent",
  );
  assert.equal(explainClientError(new ReadTimeoutError(300_000)), "idle for 300 s, disconnected");
  assert.equal(explainClientError(new Deno.errors.Interrupted("x")), "connection closed");
  assert.equal(
    explainClientError(new LineTooLongError(10)),
    "sent a line longer than 10 bytes, disconnected",
  );
  assert.equal(explainClientError(new Error("boom\nstack")), "boom");
});
