/**
 * tls_server.ts — lesson 14: the line conversation of socket_server_with_select
 * (`OK ... <line>`, many clients at once), encrypted with TLS.
 *
 * `Deno.listenTls` takes what a TCP listen takes, plus a certificate and its
 * private key; what `accept()` returns reads and writes plain bytes, as a TCP connection
 * does, and TLS encrypts them on the wire. The rest of the file is the
 * select lesson's, with one step added before the conversation: the TLS
 * handshake (`conn.handshake()`), in which the client checks our certificate
 * and both agree on keys. It runs per connection inside `serve(conn)`, which
 * is not awaited, so a client that is slow to shake hands (or never sends
 * its ClientHello at all) holds nobody else up; a timer closes it after
 * `--handshake-timeout`. `accept()` itself only takes the TCP connection:
 * Deno does the handshake later, on the first read or write, or when asked.
 * One limit of Deno 2.9 here: closing a TLS connection whose handshake has
 * not ended frees it for us (its place in `--max-conns`, its log line), but
 * Deno keeps its socket open until the client sends a byte or leaves (the
 * TLS library waits for the handshake to end before it closes). A client
 * that connects and stays silent keeps a file descriptor until then, and
 * `--max-conns` no longer counts it: enough of them reach the process's limit
 * on open files (`ulimit -n`), and then accept() fails for everyone until they
 * leave. The same holds for a client dropped by `--idle-timeout` while a reply
 * to it is still being written (one that never reads): the log says it is
 * disconnected and its place is free, but its socket, and the replies the
 * kernel holds for it (up to some 4 MB), stay until it reads or leaves. A TCP
 * front (such as tcp_proxy, lesson 13) or a firewall limit per address is
 * the defence a real server would add.
 *
 * The certificate in certs/ (a `localhost` leaf signed by a small learning
 * CA, certs/ca.pem) is for learning only: its private key is public, in this
 * repository. NEVER use it, or its CA, in production; certs/README.md says
 * how it was made and how to make your own (`--cert`, `--key`).
 *
 * What a client can do wrong, and what the server says (one line, and it
 * keeps serving): speak plain TCP to it (`not a TLS client`: the client gets a
 * 7-byte TLS alert and EOF), refuse our certificate (the alert it sent:
 * `UnknownCA` if it does not trust certs/ca.pem), leave or reset during the
 * handshake, never finish it (`--handshake-timeout`).
 * `--trace` shows the bytes after decryption, as the conversation sees them;
 * on the wire (tcpdump) they are unreadable. The `--max-conns` cap counts
 * clients still shaking hands; one over it is told `ERR server busy` once its
 * handshake lets us say anything (or closed at the deadline).
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' --allow-read=certs scripts/tls_server.ts
 *   deno task tls_server        (same thing; --cert and --key must then be under certs/)
 *
 * Try it from a second terminal:
 *   $ deno task tls_client -m hello
 *   OK ... hello
 * and the server prints:
 *   Client (127.0.0.1:PORT) connected over TLS
 *   Client (127.0.0.1:PORT) is offline
 *
 * Or by hand with OpenSSL's client, which prints the chain it checked
 * (`verify return:1`), then type a line and get it back:
 *   $ openssl s_client -connect 127.0.0.1:8443 -CAfile certs/ca.pem -quiet
 *
 * Talk to it in plain TCP instead, and see the alert it answers with:
 *   $ printf 'hello\n' | nc -N 127.0.0.1 8443 | od -An -tx1 | cut -c2-
 *   15 03 03 00 02 02 32
 * and the server prints:
 *   127.0.0.1:PORT: not a TLS client (it sent bytes that are no TLS record: plain TCP?)
 *
 * @module
 */

import { parseCli, runMain, secondsToMs } from "../lib/cli.ts";
import { closeQuietly, LineTooLongError, writeAll } from "../lib/io.ts";
import { log, logError } from "../lib/log.ts";
import { BatchLineReader, lineServerFlags, ReplyBatch } from "../lib/many_clients.ts";
import { nextPoll } from "../lib/fairness.ts";
import {
  acceptAgain,
  closeWhenIdleFor,
  LINE_TOO_LONG,
  OpenClients,
  stopOnSignal,
  turnAway,
  whyCannotListen,
  whyClientFailed,
} from "../lib/server.ts";
import { formatAddress } from "../lib/text.ts";
import { traceConn } from "../lib/trace.ts";
import { certPath, readPem } from "./tls/pem.ts";

const CERT = "certs/localhost.pem";
const KEY = "certs/localhost-key.pem";

const args = parseCli({
  name: "tls_server",
  summary: "Many clients at once over TLS; answers every line with 'OK ... <line>'. " +
    "The certificate in certs/ is for learning: never use it in production.",
  options: {
    ...lineServerFlags(8443, 300),
    cert: {
      kind: "string",
      default: CERT,
      valueName: "FILE",
      help: "certificate chain, PEM (the default is for learning only)",
    },
    key: { kind: "string", default: KEY, valueName: "FILE", help: "its private key, PEM" },
    "handshake-timeout": {
      kind: "seconds",
      default: 10,
      max: 600,
      help: "drop a client that has not finished the TLS handshake in this long (0: never)",
    },
    "max-conns": {
      kind: "integer",
      min: 1,
      max: 100_000,
      default: 1000,
      help: "clients served at once, handshakes included",
    },
    quiet: { kind: "boolean", help: "do not log clients connecting and going offline" },
  },
});

const OK = new TextEncoder().encode("OK ... ");
const NEWLINE = new TextEncoder().encode("\n");
const clients = new OpenClients(); // the ones Ctrl+C lets finish, then closes
const handshakeMs = secondsToMs(args["handshake-timeout"]);
/** A handshake that --handshake-timeout cut short (declared before the loop below uses it). */
class HandshakeTimeout extends Error {}

await runMain(async () => {
  // The certificate the clients check, and the private key that proves it is ours.
  const cert = await readPem("cert", certPath(args.cert, CERT), "certificate");
  const key = await readPem("key", certPath(args.key, KEY), "private key");
  let listener: Deno.TlsListener;
  try {
    listener = Deno.listenTls({ hostname: args.host, port: args.port, cert, key });
  } catch (err) {
    throw await whyCannotListenTls(err);
  }
  stopOnSignal("tls_server", listener, clients, log); // Ctrl+C: stop, let replies finish, exit 0
  console.log(`listening on ${formatAddress(listener.addr)} (TLS)`);

  while (true) {
    let conn: Deno.TlsConn;
    try {
      conn = await listener.accept(); // the TCP connection only: no handshake yet
    } catch (err) {
      if (await acceptAgain(err, log)) continue; // a client reset in the backlog: take the next
      break; // Ctrl+C closed the listener
    }
    if (args.trace) traceConn(conn, { print: logError }); // --trace: every read and write, decrypted
    if (clients.size >= args["max-conns"]) {
      // ERR server busy can only be said in TLS: after a handshake, within its deadline.
      handshake(conn).then(() => turnAway(conn, log), () => closeQuietly(conn));
      continue;
    }
    serve(conn); // not awaited: back to accept(); serve() catches its own errors, none escapes
  }
});

/**
 * The TLS handshake, within --handshake-timeout: a handshake cannot be cancelled,
 * so a timer closes the connection, which makes it fail (`Interrupted`).
 */
async function handshake(conn: Deno.TlsConn): Promise<void> {
  let late = false;
  const timer = handshakeMs === undefined ? undefined : setTimeout(() => {
    late = true;
    closeQuietly(conn);
  }, handshakeMs);
  try {
    await conn.handshake();
  } catch (err) {
    throw late ? new HandshakeTimeout() : err;
  } finally {
    clearTimeout(timer);
  }
}

/** Shakes hands, then answers every line of one client with `OK ... <line>`, until it leaves. */
async function serve(conn: Deno.TlsConn): Promise<void> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn); // aborts at Ctrl+C; counted from now on for --max-conns
  try {
    await handshake(conn);
  } catch (err) {
    if (!stop.aborted) log(`${peer}: ${whyHandshakeFailed(err)}`); // one line, then the next
    clients.close(conn);
    return;
  }
  const idle = closeWhenIdleFor(conn, secondsToMs(args["idle-timeout"]));
  if (!args.quiet) log(`Client (${peer}) connected over TLS`);
  try {
    const lines = new BatchLineReader(conn, { maxLine: args["max-line"], signal: stop });
    const replies = new ReplyBatch(conn, idle);
    // Every whole line that has arrived comes in one batch; null: the client is done.
    for (let batch = await lines.readBatch(); batch !== null; batch = await lines.readBatch()) {
      idle?.restart(); // a line came in: this client is not idle
      for (const line of batch) replies.add(OK, line, NEWLINE);
      await replies.send(); // one write() answers them all, as one TLS record or a few
      await nextPoll(); // fairness: the other clients get their turn before we read again
    }
    if (!args.quiet) log(`Client (${peer}) is offline`);
  } catch (err) {
    // A TLS client should say goodbye (close_notify) before its FIN; many (Python's, curl's
    // when killed) just close. Between lines that loses nothing: it is offline all the same.
    if (/without sending TLS close_notify/.test((err as Error)?.message)) {
      if (!args.quiet) log(`Client (${peer}) is offline (it closed without TLS close_notify)`);
      return;
    }
    if (err instanceof LineTooLongError) await writeAll(conn, LINE_TOO_LONG).catch(() => {});
    if (!stop.aborted) log(`${peer}: ${whyClientFailed(err, idle)}`);
  } finally {
    idle?.stop();
    clients.close(conn);
  }
}

/**
 * Why a handshake failed, in one line. Deno's messages come from rustls, the TLS library
 * under it: `received corrupt message of type InvalidContentType` is a client that sent
 * plain bytes; `received fatal alert: UnknownCA` is a client that refused our certificate.
 */
function whyHandshakeFailed(err: unknown): string {
  if (err instanceof HandshakeTimeout) {
    return `no TLS handshake within ${
      args["handshake-timeout"]
    } s (--handshake-timeout), disconnected`;
  }
  const message = err instanceof Error ? err.message : String(err);
  if (/InvalidContentType|corrupt message|HTTP request|InappropriateMessage/.test(message)) {
    return "not a TLS client (it sent bytes that are no TLS record: plain TCP?)";
  }
  const alert = message.match(/received fatal alert: (\w+)/)?.[1];
  if (alert) {
    const why: Record<string, string> = {
      UnknownCA: "it does not trust the CA that signed our certificate (give it certs/ca.pem)",
      BadCertificate: "our certificate is not for the name it asked for, or is malformed",
      CertificateExpired: "our certificate has expired, or is not valid yet (check the clocks)",
      CertificateUnknown: "it refused our certificate",
    };
    return `the client refused the handshake, alert ${alert}${why[alert] ? `: ${why[alert]}` : ""}`;
  }
  if (err instanceof Deno.errors.UnexpectedEof) return "left during the TLS handshake";
  if (err instanceof Deno.errors.ConnectionReset) {
    return "connection reset during the TLS handshake";
  }
  return `TLS handshake failed: ${whyClientFailed(err)}`;
}

/** Why `Deno.listenTls` failed: a certificate and key that do not match, or what `listen` says. */
async function whyCannotListenTls(err: unknown): Promise<Error> {
  const message = err instanceof Error ? err.message : String(err);
  if (/KeyMismatch|keys may not be consistent/.test(message)) {
    return new Error(`--key ${args.key} is not the private key of --cert ${args.cert}`);
  }
  if (/No certificates found|No keys found|certificate|private key/i.test(message)) {
    return new Error(`cannot use --cert ${args.cert} with --key ${args.key}: ${message}`);
  }
  return await whyCannotListen(err, args.host, args.port); // names the address
}
