/**
 * http_server.ts — lesson 12: HTTP/1.1 by hand, on a plain TCP socket.
 *
 * HTTP/1.1 is text on TCP, framed two ways at once. A request starts with a
 * head of lines, each ended by CRLF (`\r\n`): the request line (`GET /echo
 * HTTP/1.1`), header lines (`Host: x`), and an empty line that ends the head.
 * A response has the same kind of head, then a body framed by its length:
 * `Content-Length: N` and exactly N bytes, so the client knows where it ends
 * and may send its next request on the same connection (keep-alive). Here
 * that is all done by hand: `Deno.listen`, an `accept()` loop, and for each
 * connection a buffer that `conn.read()` fills, split into lines, every line
 * checked, and every response written with its `Content-Length`. `Deno.serve`
 * would do all of it; this file shows what it does.
 *
 * What it serves: `GET /` a small HTML page; `GET /echo` (with a query string
 * too: `/echo?x=1`) the request line and headers exactly as their bytes
 * arrived, as text/plain; any other path 404. HEAD is answered like GET, the
 * same headers and no body. Any other method gets 405 with `Allow: GET, HEAD`.
 *
 * Connections. HTTP/1.1 keeps the connection for the next request unless the
 * client sends `Connection: close`; an HTTP/1.0 request is answered, and the
 * connection closed (even with `Connection: keep-alive`: a choice, to keep
 * 1.0 simple). The response says `Connection: close` whenever the server will
 * close after it. A client may send several requests before it reads the
 * first answer (pipelining): they are answered in order, and the answers to
 * the requests that came together go out in one write.
 *
 * Limits, each with its status code, and then the connection is closed:
 * - a request line over `--max-line` bytes (8192): 414 URI Too Long;
 * - header lines over `--max-header-bytes` in all (16384): 431 Request
 *   Header Fields Too Large;
 * - bytes that are not an HTTP/1.x request (a request line without its
 *   three parts, a header line without a colon, a control byte, a bare CR,
 *   a folded header line, an HTTP/1.1 request without exactly one Host):
 *   400 Bad Request; a version other than HTTP/1.x (`HTTP/2.0`): 505;
 * - a request head not complete within `--header-timeout` (10 s) of its
 *   first byte: 408 Request Timeout. A slowloris, who sends a head a byte
 *   at a time to hold a connection for ever, holds it 10 s;
 * - a connection that for `--idle-timeout` (30 s) neither completes a
 *   request head nor takes a byte of a response is closed without a word:
 *   that is how keep-alive ends (a client then opens a new connection);
 * - past `--max-conns` (1000) clients, a new one gets 503 and is closed.
 *
 * Bodies: this server takes none. A request that announces one (a
 * `Content-Length` above 0, or any `Transfer-Encoding`) is answered, 405 for a
 * method other than GET or HEAD and 400 for a GET or HEAD, and the connection
 * is closed: left unread, the body's bytes would be taken for the next
 * request, and skipping them safely means decoding them (chunked encoding).
 * Closing has a trap of its own: if the client is still sending when the
 * server closes, the kernel answers its bytes with a reset (RST). The
 * client's send then fails, and a client that sends its whole request
 * before it reads (most do) never reads the response; some systems even
 * drop a response already received. So every close after a response is a
 * lingering close: `conn.closeWrite()` (a FIN after the response), then what
 * still comes is read and dropped for up to 1 s, then `conn.close()`.
 *
 * Many clients at once, as in socket_server_with_select.ts: each connection
 * is a `serve(conn)` not awaited, and after each batch of responses it
 * awaits `nextPoll()`, so a client that pipelines without pause cannot keep
 * the others waiting. Ctrl+C closes the connections that wait for a request
 * at once, and answers a request under way with `Connection: close` first.
 * Each request is one log line (`--quiet`: none), and `--trace` shows every
 * read and write.
 *
 * Run:
 *   deno run --allow-net='127.0.0.1,[::1]' scripts/http_server.ts
 *   deno task http_server        (same thing)
 *
 * Try it from a second terminal (or open http://127.0.0.1:8080/ in a browser):
 *   $ printf 'GET /echo?x=1 HTTP/1.1\r\nHost: x\r\n\r\n' | nc -N 127.0.0.1 8080
 *   HTTP/1.1 200 OK
 *   Content-Type: text/plain; charset=utf-8
 *   Content-Length: 35
 *   ...
 *   GET /echo?x=1 HTTP/1.1
 *   Host: x
 * and the server prints:
 *   127.0.0.1:PORT GET /echo?x=1 HTTP/1.1 -> 200
 *
 * Three requests on one connection, with curl: it connects once (the 1
 * after the first status code), then sends the next request on the same
 * connection (0 new connections):
 *   $ curl -sS -w '%{http_code} %{num_connects}\n' -o /dev/null http://127.0.0.1:8080/ -o /dev/null http://127.0.0.1:8080/echo -o /dev/null http://127.0.0.1:8080/nope
 *   200 1
 *   200 0
 *   404 0
 *
 * @module
 */

import { parseCli, runMain, secondsToMs } from "../lib/cli.ts";
import { closeQuietly, concatBytes, writeAll } from "../lib/io.ts";
import { log, logError } from "../lib/log.ts";
import { nextPoll } from "../lib/fairness.ts";
import {
  acceptAgain,
  closeWhenIdleFor,
  IdleClock,
  MAX_LINE_LIMIT,
  OpenClients,
  stopOnSignal,
  whyCannotListen,
  whyClientFailed,
} from "../lib/server.ts";
import { formatAddress } from "../lib/text.ts";
import { TRACE_FLAG, traceConn } from "../lib/trace.ts";

const args = parseCli({
  name: "http_server",
  summary: "HTTP/1.1 by hand on a TCP socket: GET / (a page), GET /echo (your request as it " +
    "came), keep-alive, pipelining, and a status code for every limit.",
  options: {
    host: { kind: "host", default: "127.0.0.1", help: "address to listen on (0.0.0.0 or ::)" },
    port: { kind: "port", short: "p", default: 8080, help: "TCP port, 0 for any free one" },
    "idle-timeout": {
      kind: "seconds",
      default: 30,
      help: "close a connection that neither completes a request head nor takes a byte of a " +
        "response for this long (0: never)",
    },
    "header-timeout": {
      kind: "seconds",
      default: 10,
      help: "answer 408 and close when a request head is not complete this long after its " +
        "first byte (0: never)",
    },
    "max-line": {
      kind: "integer",
      min: 16,
      max: MAX_LINE_LIMIT,
      default: 8192,
      help: "longest request line in bytes; longer gets 414",
    },
    "max-header-bytes": {
      kind: "integer",
      min: 16,
      max: MAX_LINE_LIMIT,
      default: 16384,
      help: "most bytes of header lines in one request; more gets 431",
    },
    "max-conns": { kind: "integer", min: 1, max: 100_000, default: 1000, help: "clients at once" },
    quiet: { kind: "boolean", help: "do not log each request" },
    trace: TRACE_FLAG,
  },
});

const MAX_LINE = args["max-line"];
const MAX_HEADER_BYTES = args["max-header-bytes"];
const IDLE_MS = secondsToMs(args["idle-timeout"]);
const HEADER_MS = secondsToMs(args["header-timeout"]);
const LINGER_MS = 1000; // how long a closing connection's late bytes are read and dropped
const MAX_LINGERING = 100; // turned-away clients lingering at once; past it, closed at once
const CR = 0x0d;
const LF = 0x0a;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const clients = new OpenClients(); // the ones Ctrl+C lets finish, then closes

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  414: "URI Too Long",
  431: "Request Header Fields Too Large",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

const PAGE = encoder.encode(`<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>http_server.ts</title></head>
<body>
<h1>Hello from http_server.ts</h1>
<p>HTTP/1.1 written by hand on a TCP socket (lesson 12).</p>
<p><a href="/echo?from=a-browser">/echo</a> shows the request your browser sent, as it came.</p>
</body>
</html>
`);
const HTML = "text/html; charset=utf-8";
const TEXT = "text/plain; charset=utf-8";

/** A request the server refuses with `status`, then closes; `why` goes in the body and the log. */
class HttpError extends Error {
  constructor(readonly status: number, why: string) {
    super(why);
  }
}

/** One request's head, read and checked. */
interface Head {
  method: string;
  target: string;
  /** The target's path, without its query string. */
  path: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1 (and any later 1.x, answered as 1.1). */
  minor: number;
  /** The client asked to keep the connection (HTTP/1.1 without `Connection: close`). */
  keepAlive: boolean;
  /** It announced a body: a `Content-Length` above 0, or a `Transfer-Encoding`. */
  hasBody: boolean;
  /** The head exactly as it came, its empty line included: a view, good until the next read. */
  bytes: Uint8Array;
}

const SMALL = 2048; // an idle connection's buffer; a request head of up to this fits in one
/**
 * Reads request heads from one connection: a buffer that `conn.read()` fills, split into lines
 * as they complete. `take()` returns the next whole head; the bytes after it (the start of a
 * pipelined request) stay for the next call.
 */
class HeadReader {
  eof = false; // the client sent FIN
  #conn: Deno.Conn;
  #buf = new Uint8Array(SMALL);
  #start = 0; // the current request's first byte
  #end = 0; // one past the last byte read
  #lineStart = 0; // the line being read
  #emptyLines = 0; // before the request line
  #scanned = 0; // [#lineStart, #scanned) holds no LF (and, before the request line, no bad byte)
  #request: { method: string; target: string; minor: number } | undefined;
  #headersStart = 0;
  #hosts = 0;
  #close = false;
  #contentLength: string | undefined;
  #chunked = false;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Bytes read and not yet taken: a request under way (or a pipelined one). */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** The next whole head among the bytes read, or `undefined` if more are needed. */
  take(): Head | undefined {
    const buf = this.#buf;
    while (true) {
      let lf = buf.indexOf(LF, this.#scanned);
      if (lf >= this.#end) lf = -1;
      if (this.#request === undefined) this.#checkRequestLineBytes(lf === -1 ? this.#end : lf);
      if (lf === -1) {
        this.#scanned = this.#end;
        this.#checkLimits(this.#end, 1); // + 1: the line's CR may be in
        return undefined;
      }
      this.#scanned = lf + 1;
      const end = lf > this.#lineStart && buf[lf - 1] === CR ? lf - 1 : lf;
      this.#checkLimits(end, 0); // the line's end is known: CRLF or a bare LF, the same limit
      const line = buf.subarray(this.#lineStart, end);
      this.#lineStart = lf + 1;
      if (this.#request === undefined) {
        // Empty lines before a request line are skipped (RFC 9112, 2.2), two at most: a client
        // sending nothing else would restart the head's clock at each one, and never get its 408.
        if (line.length === 0) {
          this.#start = lf + 1;
          if (++this.#emptyLines > 2) throw new HttpError(400, "empty lines, no request line");
        } else {
          this.#request = parseRequestLine(line);
          this.#headersStart = lf + 1;
          this.#emptyLines = 0;
        }
      } else if (line.length > 0) {
        this.#header(line);
      } else {
        return this.#finish(lf + 1);
      }
    }
  }

  /**
   * Reads more bytes (`conn.read()`); false at end of stream. The buffer holds the head under way
   * (and what came after it), so it grows only while that head does: `take()` refuses a head past
   * the limits first, and a connection back to waiting goes back to 2 KiB.
   */
  async read(): Promise<boolean> {
    if (this.#start === this.#end && this.#request === undefined) {
      if (this.#buf.length > SMALL) this.#buf = new Uint8Array(SMALL); // idle: hold 2 KiB only
      this.#start =
        this.#end =
        this.#lineStart =
        this.#scanned =
          0;
    } else if (this.#end === this.#buf.length) { // full: move the request to the front, or grow
      const pending = this.#end - this.#start;
      if (pending * 2 > this.#buf.length) {
        const bigger = new Uint8Array(this.#buf.length * 2);
        bigger.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = bigger;
      } else this.#buf.copyWithin(0, this.#start, this.#end);
      const by = this.#start;
      this.#start = 0;
      this.#end -= by;
      this.#lineStart -= by;
      this.#scanned -= by;
      this.#headersStart -= by;
    }
    const n = await this.#conn.read(this.#buf.subarray(this.#end));
    if (n === null) {
      this.eof = true;
      return false;
    }
    this.#end += n;
    return true;
  }

  /** 414 or 431 as soon as the line, or the headers, grow past their limit (+ `slack` bytes). */
  #checkLimits(upTo: number, slack: number): void {
    if (this.#request === undefined) {
      if (upTo - this.#lineStart > MAX_LINE + slack) {
        throw new HttpError(414, `a request line over ${MAX_LINE} bytes (--max-line)`);
      }
    } else if (upTo - this.#headersStart > MAX_HEADER_BYTES + slack) {
      throw new HttpError(431, `headers over ${MAX_HEADER_BYTES} bytes (--max-header-bytes)`);
    }
  }

  /** Garbage is refused at its first byte: a request line is printable ASCII, CR and LF. */
  #checkRequestLineBytes(to: number): void {
    const buf = this.#buf;
    for (let i = this.#scanned; i < to; i++) {
      const b = buf[i];
      if ((b < 0x20 || b > 0x7e) && b !== CR && b !== LF) {
        throw new HttpError(400, `byte 0x${b.toString(16).padStart(2, "0")} in a request line`);
      }
    }
  }

  /** Checks one header line and keeps what the server needs of it. */
  #header(line: Uint8Array): void {
    if (line[0] === 0x20 || line[0] === 0x09) {
      throw new HttpError(400, "a folded header line (it starts with a space or a tab)");
    }
    const colon = line.indexOf(0x3a);
    if (colon === -1) throw new HttpError(400, "a header line without a colon");
    const name = line.subarray(0, colon);
    if (!isToken(name)) {
      throw new HttpError(400, "a header name that is not a token (a space before the colon?)");
    }
    for (let i = colon + 1; i < line.length; i++) {
      const b = line[i];
      if ((b < 0x20 && b !== 0x09) || b === 0x7f) {
        throw new HttpError(400, `byte 0x${b.toString(16).padStart(2, "0")} in a header value`);
      }
    }
    if (nameIs(name, "host")) this.#hosts++;
    const which = nameIs(name, "connection")
      ? "connection"
      : nameIs(name, "content-length")
      ? "content-length"
      : nameIs(name, "transfer-encoding")
      ? "transfer-encoding"
      : undefined;
    if (which === undefined) return;
    const value = decoder.decode(line.subarray(colon + 1)).trim();
    if (which === "connection") {
      if (value.toLowerCase().split(",").some((token) => token.trim() === "close")) {
        this.#close = true;
      }
    } else if (which === "transfer-encoding") {
      this.#chunked = true;
    } else {
      // One number, or a list of the same number (RFC 9110, 8.6); anything else could be read
      // two ways by two servers in a row: request smuggling.
      const values = value.split(",").map((v) => v.trim());
      const all = this.#contentLength === undefined ? values : [this.#contentLength, ...values];
      if (!all.every((v) => /^\d{1,15}$/.test(v) && Number(v) === Number(all[0]))) {
        throw new HttpError(400, "a Content-Length that is not one number");
      }
      this.#contentLength = values[0];
    }
  }

  /** The head is complete at `end`: checks it as a whole, and starts the next one there. */
  #finish(end: number): Head {
    const { method, target, minor } = this.#request!;
    const [hosts, close, contentLength, chunked] = [
      this.#hosts,
      this.#close,
      this.#contentLength,
      this.#chunked,
    ];
    const bytes = this.#buf.subarray(this.#start, end);
    this.#request = undefined;
    this.#hosts = 0;
    this.#close = this.#chunked = false;
    this.#contentLength = undefined;
    this.#start = this.#lineStart = end;
    if (minor === 1 && hosts !== 1) {
      throw new HttpError(400, hosts === 0 ? "no Host header" : "more than one Host header");
    }
    if (chunked && contentLength !== undefined) {
      throw new HttpError(400, "both Content-Length and Transfer-Encoding");
    }
    const path = targetPath(target);
    const hasBody = chunked || Number(contentLength ?? 0) > 0;
    return { method, target, path, minor, keepAlive: minor === 1 && !close, hasBody, bytes };
  }
}

/** `METHOD SP target SP HTTP/1.x`, split and checked. */
function parseRequestLine(line: Uint8Array): { method: string; target: string; minor: number } {
  if (line.includes(CR)) throw new HttpError(400, "a CR without its LF in the request line");
  const space1 = line.indexOf(0x20);
  const space2 = line.indexOf(0x20, space1 + 1);
  if (space1 <= 0 || space2 <= space1 + 1 || line.indexOf(0x20, space2 + 1) !== -1) {
    throw new HttpError(400, "a request line is METHOD, target and version, one space apart");
  }
  if (!isToken(line.subarray(0, space1))) throw new HttpError(400, "a method that is not a token");
  const version = decoder.decode(line.subarray(space2 + 1));
  const m = version.match(/^HTTP\/(\d)\.(\d)$/);
  if (!m) throw new HttpError(400, "no HTTP version at the end of the request line");
  if (m[1] !== "1") throw new HttpError(505, `HTTP/${m[1]}.${m[2]}: only HTTP/1.x is spoken here`);
  return {
    method: decoder.decode(line.subarray(0, space1)),
    target: decoder.decode(line.subarray(space1 + 1, space2)),
    minor: m[2] === "0" ? 0 : 1,
  };
}

/** The path of a request target: `/echo?x=1` is `/echo`; `http://host/echo` (absolute form) too. */
function targetPath(target: string): string {
  if (target.startsWith("/")) return target.split("?")[0];
  if (target === "*") return target; // OPTIONS * (405 here)
  if (/^[^/\s]+:\d+$/.test(target)) return target; // CONNECT host:443 (405 here too)
  if (/^https?:\/\//i.test(target) && URL.canParse(target)) return new URL(target).pathname;
  throw new HttpError(400, "a target that is neither a path nor an http:// address");
}

/** RFC 9110's token characters: letters, digits, and !#$%&'*+-.^_`|~ (a table: 1 for each). */
const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TOKEN[c.charCodeAt(0)] = 1;
}
const isToken = (bytes: Uint8Array): boolean => bytes.length > 0 && bytes.every((b) => TOKEN[b]);

/** Whether the bytes `name` are `lower` (lower case ASCII) whatever their case. */
function nameIs(name: Uint8Array, lower: string): boolean {
  if (name.length !== lower.length) return false;
  for (let i = 0; i < name.length; i++) if ((name[i] | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

let dateSecond = -1;
let dateText = "";
/** The `Date` header's value, made once a second: `Wed, 03 Dec 2025 18:34:00 GMT`. */
function httpDate(): string {
  const now = Date.now();
  if (Math.floor(now / 1000) !== dateSecond) {
    dateSecond = Math.floor(now / 1000);
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

/** Adds one response to `out`: the head, then `body` unless the request was HEAD. */
function respond(
  out: Uint8Array[],
  status: number,
  type: string,
  body: Uint8Array,
  options: { close: boolean; head?: boolean; extra?: string },
): void {
  const head = `HTTP/1.1 ${status} ${REASONS[status]}\r\nContent-Type: ${type}\r\n` +
    `Content-Length: ${body.length}\r\nDate: ${httpDate()}\r\n${options.extra ?? ""}` +
    `${options.close ? "Connection: close\r\n" : ""}\r\n`;
  out.push(encoder.encode(head));
  if (!options.head) out.push(body);
}

/** A refusal's body: the status, and why, as plain text. */
function errorBody(status: number, why: string): Uint8Array {
  return encoder.encode(`${status} ${REASONS[status]}: ${why}\n`);
}

/**
 * Answers one request (adds its response to `out`); returns whether the connection stays
 * open for the next.
 */
function answer(head: Head, out: Uint8Array[], peer: string, stopping: boolean): boolean {
  const isHead = head.method === "HEAD";
  let status: number;
  let close = !head.keepAlive || stopping;
  if (head.method !== "GET" && !isHead) {
    status = 405;
    close ||= head.hasBody; // its body's bytes would be taken for the next request
    const why = `${head.method} is not served here`;
    respond(out, status, TEXT, errorBody(status, why), {
      close,
      extra: "Allow: GET, HEAD\r\n",
    });
  } else if (head.hasBody) {
    status = 400;
    close = true;
    const why = "a GET or HEAD with a body";
    respond(out, status, TEXT, errorBody(status, why), { close, head: isHead });
  } else if (head.path === "/") {
    status = 200;
    respond(out, status, HTML, PAGE, { close, head: isHead });
  } else if (head.path === "/echo") {
    status = 200;
    const copy = head.bytes.slice(); // the view would change with the next read
    respond(out, status, TEXT, copy, { close, head: isHead });
  } else {
    status = 404;
    respond(out, status, TEXT, errorBody(status, "no such page"), { close, head: isHead });
  }
  if (!args.quiet) {
    const target = head.target.length > 200 ? `${head.target.slice(0, 200)}...` : head.target;
    log(`${peer} ${head.method} ${target} HTTP/1.${head.minor} -> ${status}`);
  }
  return !close;
}

/**
 * The end of a connection after a response: FIN first (`closeWrite`), then what the client
 * still sends is read and dropped, until it closes or for 1 s, then the close. Closing with
 * unread bytes would send a reset, which can destroy the response before the client reads it.
 * `reading` is a read already under way on `conn`, if any.
 */
async function lingeringClose(conn: Deno.Conn, reading?: Promise<unknown>): Promise<void> {
  const timer = setTimeout(() => closeQuietly(conn), LINGER_MS);
  try {
    await conn.closeWrite();
    if (reading !== undefined && !(await reading)) return;
    const sink = new Uint8Array(4096);
    while ((await conn.read(sink)) !== null) { /* dropped */ }
  } catch {
    // reset, or closed by the timer
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
  }
}

let lingering = 0;
/** A client past `--max-conns`: 503, and a lingering close (at once, if many linger already). */
function turnAwayBusy(conn: Deno.Conn): void {
  log(`${formatAddress(conn.remoteAddr)}: turned away, server full (--max-conns)`);
  const body = errorBody(503, "too many clients, try again later");
  const head = `HTTP/1.1 503 ${REASONS[503]}\r\nContent-Type: ${TEXT}\r\nContent-Length: ` +
    `${body.length}\r\nDate: ${httpDate()}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n`;
  const bytes = new Uint8Array([...encoder.encode(head), ...body]);
  if (lingering >= MAX_LINGERING) {
    writeAll(conn, bytes).catch(() => {}).finally(() => closeQuietly(conn));
    return;
  }
  lingering++;
  writeAll(conn, bytes).then(() => lingeringClose(conn)).catch(() => closeQuietly(conn))
    .finally(() => lingering--);
}

/**
 * Writes the responses in `out` with one write, and empties it. Each write that gets bytes out
 * restarts `idle`: a client that takes its responses slowly is not idle.
 */
async function send(conn: Deno.Conn, out: Uint8Array[], idle?: IdleClock): Promise<void> {
  if (out.length === 0) return;
  const bytes = out.length === 1 ? out[0] : concatBytes(out);
  out.length = 0;
  await writeAll(conn, bytes, idle);
}

const headTimeout = () =>
  new HttpError(408, `no whole request head within ${args["header-timeout"]} s (--header-timeout)`);

/** Serves one connection: request heads in, responses out, until one side closes. */
async function serve(conn: Deno.TcpConn): Promise<void> {
  const peer = formatAddress(conn.remoteAddr);
  const stop = clients.add(conn); // aborts at Ctrl+C
  // Idle: no request head completed and no byte of a response taken for --idle-timeout.
  const idle = closeWhenIdleFor(conn, IDLE_MS);
  // The head's own deadline, from its first byte: a slowloris gets 408.
  let wakeForTimeout: (() => void) | undefined;
  const headClock = HEADER_MS === undefined
    ? undefined
    : new IdleClock(HEADER_MS, () => wakeForTimeout?.());
  const heads = new HeadReader(conn);
  const out: Uint8Array[] = []; // responses not yet written
  let waiting = false; // for the first byte of a request: Ctrl+C closes it at once
  stop.addEventListener("abort", () => waiting && conn.close(), { once: true });
  let reading: Promise<boolean> | undefined; // a read that the head's deadline cut short
  let answered = false; // since the last read
  try {
    while (true) {
      const head = heads.take();
      if (head !== undefined) {
        idle?.restart(); // a whole request head: not idle
        headClock?.stop();
        if (heads.buffered > 0) headClock?.restart(); // a pipelined request has begun
        if (!answer(head, out, peer, stop.aborted)) {
          await send(conn, out, idle);
          await lingeringClose(conn);
          return;
        }
        answered = true;
        continue;
      }
      if (answered) {
        await send(conn, out, idle); // the answers to what came together, in one write
        await nextPoll(); // fairness: the other clients get their turn before we read again
        answered = false;
      }
      if (heads.eof) { // the client closed: between requests, or in the middle of one
        if (heads.buffered > 0) log(`${peer}: closed before its request head was complete`);
        return;
      }
      waiting = heads.buffered === 0; // else a request is under way, on its head's clock
      if (waiting && stop.aborted) return;
      if (!waiting && headClock?.expired) throw headTimeout();
      reading = heads.read();
      const timedOut = waiting || headClock === undefined
        ? undefined
        : new Promise<"timeout">((resolve) => wakeForTimeout = () => resolve("timeout"));
      const got = timedOut ? await Promise.race([reading, timedOut]) : await reading;
      wakeForTimeout = undefined;
      if (got === "timeout") throw headTimeout(); // `reading` is still under way
      reading = undefined;
      if (waiting && got) headClock?.restart(); // a request's first byte: its clock starts
      waiting = false;
    }
  } catch (err) {
    if (err instanceof HttpError) {
      log(`${peer}: ${err.status} ${REASONS[err.status]}: ${err.message}; closed`);
      respond(out, err.status, TEXT, errorBody(err.status, err.message), { close: true });
      await send(conn, out, idle).then(() => lingeringClose(conn, reading)).catch(() => {});
    } else if (!stop.aborted) log(`${peer}: ${whyClientFailed(err, idle)}`);
  } finally {
    idle?.stop();
    headClock?.stop();
    clients.close(conn);
  }
}

await runMain(async () => {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: args.host, port: args.port });
  } catch (err) {
    throw await whyCannotListen(err, args.host, args.port); // names the address
  }
  stopOnSignal("http_server", listener, clients, log); // Ctrl+C: stop, let responses finish, exit 0
  console.log(`listening on ${formatAddress(listener.addr)}`);

  while (true) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (await acceptAgain(err, log)) continue; // a client reset in the backlog: take the next
      break; // Ctrl+C closed the listener
    }
    if (args.trace) traceConn(conn, { print: logError }); // --trace: print every read and write on it
    conn.setNoDelay(true); // responses are small: don't let Nagle hold them back
    if (clients.size >= args["max-conns"]) {
      turnAwayBusy(conn); // 503, and close it
      continue;
    }
    serve(conn); // not awaited: back to accept(); serve() catches its own errors, none escapes
  }
});
