/**
 * bind_socket.ts — the steps a client takes to reach a named host: create a
 * socket, resolve the name to an IP address, connect.
 *
 * Python's seed (`bind_socket.py`) did `socket.socket()`, then
 * `socket.gethostbyname(host)`, then `s.connect((ip, port))`. In Deno the
 * socket is created by `Deno.connect` itself, so the steps are: resolve, then
 * connect. Each step is printed only once it has happened (a name that does
 * not resolve prints no `Socket created`): the address once the name
 * resolved, `Socket created` and `Socket connected` once `Deno.connect`
 * returned. Resolution uses `node:dns` `lookup()`, which asks the system
 * resolver (`getaddrinfo`) just as `gethostbyname` does: the hosts file
 * counts, so `--host localhost` works with no network. (`Deno.resolveDns`
 * would send a DNS query instead and skip `/etc/hosts`.) Like
 * `gethostbyname`, it returns an IPv4 address. `--request` sends an HTTP
 * `HEAD /` (`writeAll`) and prints the status line (a `LineReader`: conn.read
 * in a loop up to its `\n`, since a reply may come in pieces; control bytes
 * escaped, as for any peer's bytes), to show the connection really works; `conn.close()`
 * ends it. With no network, an unknown name or a refused port, it prints one
 * `error:` line naming the host and exits 1.
 *
 * Run:
 *   deno run --allow-net scripts/bind_socket.ts --request
 *   deno task bind_socket --request       (same thing)
 * Expected output, on a machine with Internet access:
 *   IP address of www.google.com is 142.250.185.68
 *   Socket created
 *   Socket connected to www.google.com on ip 142.250.185.68 port 80
 *   HTTP/1.1 200 OK
 *
 * Offline, against a local web server (start it in a second terminal):
 *   $ python3 -m http.server 8000 --bind 127.0.0.1
 *   $ deno task bind_socket --host localhost --port 8000 --request
 *   IP address of localhost is 127.0.0.1
 *   Socket created
 *   Socket connected to localhost on ip 127.0.0.1 port 8000
 *   HTTP/1.0 200 OK
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { CliError, describeError, parseCli, runMain, secondsToMs } from "../lib/cli.ts";
import { LineReader, ReadTimeoutError, writeAll } from "../lib/io.ts";
import { showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";
const args = parseCli({
  name: "bind_socket",
  summary: "Resolves a host name like gethostbyname, connects, and optionally sends HEAD /.",
  options: {
    host: { kind: "host", default: "www.google.com", help: "host name or address to reach" },
    port: { kind: "port", short: "p", default: 80, help: "TCP port" },
    request: { kind: "boolean", help: "send 'HEAD / HTTP/1.1' and print the status line" },
    timeout: {
      kind: "seconds",
      default: 10,
      help: "the connect, and the reply to --request, each wait at most this long (0: never)",
    },
    trace: TRACE_FLAG,
  },
});

/** The longest status line we wait for: a server cannot make us buffer more. */
const MAX_STATUS_LINE = 8192;

await runMain(async () => {
  const { host, port } = args;
  const timeoutMs = secondsToMs(args.timeout);
  // 1. Resolve the name, as gethostbyname does (the system resolver, hosts file included).
  let ip: string;
  try {
    ({ address: ip } = await lookup(host, { family: 4 }));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "EPERM") {
      throw new CliError(`no permission to resolve ${host}: run with --allow-net`);
    }
    throw new CliError(
      `cannot resolve ${host} (${code ?? (err as Error).message}): check the name and the network`,
    );
  }
  console.log(`IP address of ${host} is ${ip}`);

  // 2. Create the socket and connect it: in Deno, one call does both.
  let conn: Deno.TcpConn;
  try {
    const signal = timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs);
    conn = await Deno.connect({ hostname: ip, port, signal });
  } catch (err) {
    const why = err instanceof DOMException
      ? `no answer within ${args.timeout} s (--timeout)`
      : (err as Error).message;
    throw new CliError(`cannot connect to ${host} (${ip}) port ${port}: ${why}`);
  }
  if (args.trace) traceConn(conn); // --trace: print every read and write on it
  console.log("Socket created"); // by Deno.connect, which also connected it
  console.log(`Socket connected to ${host} on ip ${ip} port ${port}`);
  if (!args.request) return conn.close();
  // 3. With --request, prove it. A read cannot be cancelled: past --timeout a
  // timer closes the connection.
  let timedOut = false;
  const watchdog = timeoutMs === undefined ? undefined : setTimeout(() => {
    timedOut = true;
    conn.close();
  }, timeoutMs);
  try {
    const request = `HEAD / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
    await writeAll(conn, new TextEncoder().encode(request)); // write() may send less
    // The reply may come in pieces: a LineReader calls conn.read until the
    // status line's `\n` (a status line cut off by a close is not one).
    const status = await new LineReader(conn, { maxLine: MAX_STATUS_LINE, requireNewline: true })
      .readLine();
    if (status === null) throw new CliError(`${host} closed the connection without a reply`);
    console.log(showBytes(status)); // the server's bytes, never raw control bytes
  } catch (err) {
    // The error line names the server, and says "no reply within N s" after --timeout.
    const why = timedOut ? new ReadTimeoutError(timeoutMs!) : err;
    throw new CliError(describeError(why, `${host}:${port}`));
  } finally {
    clearTimeout(watchdog);
    if (!timedOut) conn.close(); // (the watchdog closed it already)
  }
});
