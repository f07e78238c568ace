/**
 * NOT TO SHIP! ok_server.ts — the `OK ... <line>` server the way tutorials
 * write it, kept here to show how it breaks. Copy scripts/socket_server.ts
 * (one client at a time) or scripts/socket_server_with_select.ts (many at
 * once) instead: they survive everything below (tests/naive_test.ts checks
 * both sides).
 *
 * It takes whatever one read of `conn.readable` brings as whole lines, splits
 * it on `\n` and answers each piece. It passes the first test anyone tries
 * (`printf 'hello\n' | nc -N 127.0.0.1 8888` prints `OK ... hello`), and it
 * breaks three ways:
 *
 * 1. A read is not a message. A line that arrives in two pieces is answered
 *    twice: `(printf 'hel'; sleep 1; printf 'lo\n') | nc -N 127.0.0.1 8888`
 *    prints `OK ... hel` and `OK ... lo` (by hand: in `nc 127.0.0.1 8888`
 *    type `hel`, Ctrl+D to send it, then `lo` and Enter). A line longer than
 *    one read (64 KiB at most in Deno) comes back as several replies. Ours
 *    split the stream on `\n` with a `LineReader`, however the bytes arrive.
 * 2. The last replies are lost after a half-close (`nc -N`: "no more from
 *    me, but I am still listening"). In Deno, `conn.readable` closes the
 *    whole connection, both ways, once it reads the end of the stream, and
 *    `pipeThrough` reads ahead: while the handler still writes `OK ... a`,
 *    the pipe reads the client's FIN and closes the connection, so writing
 *    `OK ... b` fails with `BadResource: Bad resource ID`, and (see 3) that
 *    ends the server. It is a race that the pipe wins nearly every time, not
 *    every time: `printf 'a\nb\n' | nc -N 127.0.0.1 8888` prints only
 *    `OK ... a` (40 runs of 40 on a fresh server here, 29 of 30 on one that
 *    served 50 clients first). What decides it is when the FIN comes: one
 *    that comes once the replies are written loses nothing
 *    (`(printf 'a\nb\n'; sleep 1) | nc -N 127.0.0.1 8888` gets both), which
 *    is why the bug is easy to miss. Ours read with `conn.read()`, which
 *    leaves the connection open at end of stream, and answer every line
 *    before closing.
 * 3. One client's error ends the server for everyone. `handle(conn)` is not
 *    awaited, so nothing catches what it throws: a client that resets
 *    (`ConnectionReset`) is an unhandled rejection, and Deno exits with
 *    `error: Uncaught (in promise) ConnectionReset: Connection reset by peer`.
 *    A client that resets before it is accepted does the same from the
 *    accept loop (`NotConnected`). Ours log one line and serve the next
 *    client (each script's `serve()` catches its errors; `acceptAgain`).
 *
 * It also never checks how much `conn.write()` wrote (a short write loses
 * the rest: ours use `writeAll`), and has no limit on clients, line length
 * or idle time.
 *
 * Run:
 *   deno run --allow-net=127.0.0.1 naive/ok_server.ts --port 8888
 *
 * @module
 */

// The flags are the collection's (--help, one-line errors); the socket code below is the naive part.
import { parseCli } from "../lib/cli.ts";

const { port } = parseCli({
  name: "naive/ok_server",
  summary: "NOT TO SHIP: the OK server as tutorials write it, kept to show how it breaks.",
  options: {
    port: { kind: "port", short: "p", default: 8888, help: "TCP port, 0 for any free one" },
  },
});
const listener = Deno.listen({ hostname: "127.0.0.1", port });
console.log(`listening on 127.0.0.1:${listener.addr.port}`);
const encoder = new TextEncoder();

for await (const conn of listener) {
  handle(conn); // not awaited, so that clients are served at once
}

async function handle(conn: Deno.Conn) {
  for await (const text of conn.readable.pipeThrough(new TextDecoderStream())) {
    for (const line of text.split("\n")) {
      if (line) await conn.write(encoder.encode(`OK ... ${line}\n`));
    }
  }
}
