/**
 * tls_client.ts — lesson 14: socket_client over TLS. Connects to `--host`
 * (default `localhost`), checks that the server's certificate is signed by a
 * CA it trusts and is valid for that name, sends messages one per line, and
 * prints each reply.
 *
 * `Deno.connectTls` is socket_client's connect plus what to trust: `caCerts` (the
 * learning CA, certs/ca.pem, or yours with `--ca FILE`) is added to the
 * public roots Deno trusts anyway (Mozilla's), so the same client can also
 * reach a real server. The name checked is the one you connect to, `--host`:
 * `localhost`, `127.0.0.1` and `::1` are all in the learning certificate, any
 * other name is not. `connectTls` resolves once TCP is connected; the
 * handshake (`conn.handshake()`) is where the certificate is checked, and a
 * timer bounds it by `--timeout` (a handshake cannot be cancelled: the timer
 * closes the connection). Then the conversation is socket_client's: each
 * message and its `\n` in one write, each reply read up to its `\n`.
 *
 * The learning CA's key is public, in this repository: anyone can sign a
 * certificate it trusts. Trust it for these lessons only, NEVER in
 * production (certs/README.md).
 *
 * What can go wrong, each one `error:` line (exit 1), in words, not rustls's:
 * a certificate from a CA we do not trust (UnknownIssuer: `--ca`), for
 * another name (NotValidForName), expired or not yet valid, a CA's
 * certificate used as a server's (CaUsedAsEndEntity: a plain `openssl req
 * -x509` one), a server that does not speak TLS (a plain TCP server answers
 * our ClientHello with bytes that are no TLS record, or never answers), a
 * server that refuses us (its alert). `--trace` shows the bytes before
 * encryption and after decryption: what the conversation sends and reads.
 *
 * Run (start scripts/tls_server.ts first):
 *   deno run --allow-net='127.0.0.1,[::1],localhost' --allow-read=certs scripts/tls_client.ts --message hello
 *   deno task tls_client --message hello     (same thing)
 * Expected output:
 *   OK ... hello
 *
 * Pipe many messages, one per line:
 *   $ printf 'temp 21.5\nhumidity 40\n' | deno task tls_client
 *   OK ... temp 21.5
 *   OK ... humidity 40
 *
 * Without our server, OpenSSL's plays it, with the same certificate (type replies in it):
 *   $ openssl s_server -accept 8443 -cert certs/localhost.pem -key certs/localhost-key.pem
 *
 * @module
 */

import { CliError, describeError, parseCli, runMain, secondsToMs, startHint } from "../lib/cli.ts";
import {
  closeQuietly,
  concatBytes,
  LineReader,
  LineTooLongError,
  ReadTimeoutError,
  TruncatedLineError,
  writeAll,
} from "../lib/io.ts";
import { ATTEMPTS_FLAG, connectWithRetry, reportAttempt } from "../lib/retry.ts";
import { formatAddress, paint, showBytes } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";
import { certPath, readPem } from "./tls/pem.ts";
import { checkMessages, MAX_REPLY, messages } from "./socket_client/messages.ts";

const CA = "certs/ca.pem";

const args = parseCli({
  name: "tls_client",
  summary: "Sends messages over TLS to a line server and prints each reply. " +
    "It trusts the learning CA in certs/: never do that in production.",
  options: {
    host: { kind: "host", default: "localhost", help: "server to connect to: the name checked" },
    port: { kind: "port", short: "p", default: 8443, help: "server's TCP port" },
    message: {
      kind: "strings",
      short: "m",
      help: "a message to send, one line (repeatable). Without -m: each line of stdin when " +
        "stdin is a pipe or file; on a terminal, or with empty input, one sample reading",
    },
    ca: {
      kind: "string",
      default: CA,
      valueName: "FILE",
      help: "a CA certificate to trust (PEM), besides the public ones (default: for learning only)",
    },
    attempts: ATTEMPTS_FLAG,
    timeout: {
      kind: "seconds",
      default: 10,
      help: "each connect attempt, the handshake and each reply wait at most this long (0: never)",
    },
    trace: TRACE_FLAG,
  },
});

checkMessages("tls_client", args.message); // one line each: else a usage error
const NEWLINE = new TextEncoder().encode("\n");
const target = formatAddress({ transport: "tcp", hostname: args.host, port: args.port });
const timeoutMs = secondsToMs(args.timeout);

await runMain(async () => {
  const ca = await readPem("ca", certPath(args.ca, CA), "certificate");
  // 1. Connect: TCP, with retries while the server starts. No byte of TLS has moved yet.
  const conn = await connectWithRetry({
    connect: ({ signal }) =>
      abortable(Deno.connectTls({ hostname: args.host, port: args.port, caCerts: [ca] }), signal),
    hostname: args.host, // (for the error lines)
    port: args.port,
    attempts: args.attempts,
    connectTimeoutMs: timeoutMs ?? 0,
    hint: startHint("tls_server", args.port, 8443),
    onRetry: reportAttempt(args.attempts), // "attempt 1/5 failed: ...; retrying in N ms" (stderr)
  });
  if (args.trace) traceConn(conn); // --trace: every read and write, before encryption
  // 2. The handshake: the server shows its certificate, we check it (CA, name, dates).
  let timedOut = false;
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  const closeWhenLate = () => {
    if (timeoutMs === undefined) return;
    watchdog = setTimeout(() => {
      timedOut = true;
      conn.close();
    }, timeoutMs);
  };
  try {
    closeWhenLate();
    await conn.handshake().catch((err) => {
      throw timedOut
        ? new CliError(
          `no TLS handshake from ${target} within ${args.timeout} s ` +
            "(--timeout): is it a TLS server?",
        )
        : whyHandshakeFailed(err);
    });
    clearTimeout(watchdog);
    console.error(paint("dim", `connected to ${target} over TLS, certificate checked`, "stderr"));
    // requireNewline: a reply is complete only once its `\n` has arrived.
    const replies = new LineReader(conn, { maxLine: MAX_REPLY, requireNewline: true });
    for await (const message of messages(args.message)) {
      // 3. Send: the line and its newline in one write (one TLS record).
      await writeAll(conn, concatBytes([message, NEWLINE]));
      closeWhenLate();
      // 4. Read the reply, decrypted, up to its `\n`.
      const reply = await replies.readLine();
      clearTimeout(watchdog);
      if (reply === null) throw new CliError(`${target} closed the connection before replying`);
      console.log(showBytes(reply)); // the server's bytes, but never raw control bytes
    }
  } catch (err) {
    throw explain(timedOut && !(err instanceof CliError) ? new ReadTimeoutError(timeoutMs!) : err);
  } finally {
    clearTimeout(watchdog);
    closeQuietly(conn); // (the watchdog may have closed it already)
  }
});

/** `promise`, or a rejection once `signal` aborts (a connect that comes later is closed). */
function abortable(promise: Promise<Deno.TlsConn>, signal?: AbortSignal): Promise<Deno.TlsConn> {
  if (!signal) return promise;
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      reject(signal.reason);
      promise.then(closeQuietly, () => {});
    };
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * A failed handshake in one line. Deno's messages come from rustls, the TLS library under it:
 * `invalid peer certificate: UnknownIssuer`, `certificate not valid for name "x"; certificate
 * is only valid for ...`, `certificate expired: ... not valid after 1580515200 ...`,
 * `received corrupt message of type InvalidContentType` (a reply that is no TLS record).
 */
function whyHandshakeFailed(err: unknown): Error {
  const message = err instanceof Error ? err.message.split("\n")[0] : String(err);
  const cert = `the certificate of ${target}`;
  const date = (field: string) => {
    const seconds = Number(message.match(new RegExp(`not valid ${field} (\\d+)`))?.[1]);
    return Number.isFinite(seconds) ? ` (${new Date(seconds * 1000).toISOString()})` : "";
  };
  if (/UnknownIssuer/.test(message)) {
    return new CliError(
      `${cert} is signed by a CA we do not trust (UnknownIssuer): ` +
        `give the CA that signed it with --ca FILE`,
    );
  }
  if (/NotValidForName|not valid for name/.test(message)) {
    const names = message.match(/only valid for (.*)$/)?.[1];
    return new CliError(
      `${cert} is not valid for the name '${args.host}' (NotValidForName)` +
        (names
          ? `; it is for ${names.replace(/(?:DnsName|IpAddress)\("?([^")]*)"?\)/g, "$1")}`
          : "") +
        ": connect with a name it holds (--host)",
    );
  }
  if (/certificate expired|Expired/.test(message)) {
    return new CliError(
      `${cert} has expired${date("after")} (Expired): the server needs a new one ` +
        "(or this machine's clock is wrong)",
    );
  }
  if (/not valid yet|NotValidYet/.test(message)) {
    return new CliError(
      `${cert} is not valid yet${date("before")} (NotValidYet): is this machine's clock right?`,
    );
  }
  if (/CaUsedAsEndEntity/.test(message)) {
    return new CliError(
      `${cert} is a CA's certificate, not a server's (CaUsedAsEndEntity): a self-signed ` +
        "one from openssl req -x509 is; sign a leaf with a CA instead (certs/README.md)",
    );
  }
  if (/InvalidContentType|corrupt message|InappropriateMessage/.test(message)) {
    return new CliError(
      `${target} answered in something that is not TLS: is it a plain TCP server? ` +
        "(try socket_client)",
    );
  }
  const alert = message.match(/received fatal alert: (\w+)/)?.[1];
  if (alert) return new CliError(`${target} refused the TLS handshake (alert ${alert})`);
  if (err instanceof Deno.errors.UnexpectedEof || /unexpected end of file/.test(message)) {
    return new CliError(
      `${target} closed the connection during the TLS handshake: is it a TLS server?`,
    );
  }
  if (/invalid peer certificate/.test(message)) {
    return new CliError(
      `${cert} was refused: ${message.replace("invalid peer certificate: ", "")}`,
    );
  }
  return new CliError(`TLS handshake with ${target} failed: ${describeError(err)}`);
}

/** A failed reply, in words that say what happened. */
function explain(err: unknown): unknown {
  if (err instanceof TruncatedLineError) {
    return new CliError(
      `the reply was cut off: ${target} closed the connection after ` +
        `'${showBytes(err.partial)}' (no newline)`,
    );
  }
  if (err instanceof LineTooLongError) {
    return new CliError(`a reply from ${target} is longer than ${MAX_REPLY} bytes`);
  }
  if (err instanceof ReadTimeoutError) return new CliError(describeError(err, target));
  if (/without sending TLS close_notify/.test((err as Error)?.message)) {
    return new CliError(
      `${target} closed the connection before replying (without TLS close_notify)`,
    );
  }
  return err;
}
