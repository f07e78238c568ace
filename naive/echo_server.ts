/**
 * NOT TO SHIP! echo_server.ts — the Deno echo server every tutorial shows,
 * kept here to show how it breaks. For a server that stays up, copy
 * scripts/socket_server_with_select.ts (many clients at once) or
 * scripts/socket_server.ts (one at a time) instead (tests/naive_test.ts
 * checks both sides).
 *
 * Each connection's `conn.readable` is piped into its own `conn.writable`.
 * For an echo that is right as far as it goes: bytes in, the same bytes out,
 * so how the reads split them does not matter, and `pipeTo` writes each chunk
 * before it reads the next, so a client that half-closes (`nc -N`) still gets
 * all of its echo. What breaks:
 *
 * 1. One client's error ends the server for everyone. The promise `pipeTo`
 *    returns is not awaited, so nothing handles its failure: a client that
 *    resets (`ConnectionReset`) is an unhandled rejection, and Deno exits with
 *    `error: Uncaught (in promise) ConnectionReset: Connection reset by peer`.
 *    A client that resets before it is accepted does the same from the
 *    accept loop (`NotConnected: Transport endpoint is not connected`).
 *    Ours log one line and serve the next client (each script's `serve()`
 *    catches its errors; `acceptAgain`, lib/server.ts).
 * 2. No limits: a client that connects and says nothing holds its
 *    connection forever, and there is no cap on how many. Ours drop idle
 *    clients (`--idle-timeout`) and cap the rest (`--max-conns`).
 *
 * Run:
 *   deno run --allow-net=127.0.0.1 naive/echo_server.ts --port 8888
 *
 * Try it from a second terminal:
 *   $ printf 'hello\n' | nc -N 127.0.0.1 8888
 *   hello
 *
 * @module
 */

// The flags are the collection's (--help, one-line errors); the socket code below is the naive part.
import { parseCli } from "../lib/cli.ts";

const { port } = parseCli({
  name: "naive/echo_server",
  summary: "NOT TO SHIP: the echo server as tutorials write it, kept to show how it breaks.",
  options: {
    port: { kind: "port", short: "p", default: 8888, help: "TCP port, 0 for any free one" },
  },
});
const listener = Deno.listen({ hostname: "127.0.0.1", port });
console.log(`listening on 127.0.0.1:${listener.addr.port}`);

for await (const conn of listener) {
  conn.readable.pipeTo(conn.writable); // not awaited, so that clients are served at once
}
