/**
 * End-to-end: scripts/http_server.ts as a real process, with real peers:
 * curl, Python's http.client, and raw sockets for what no polite client does
 * (pipelining, a slowloris, over-long lines and headers, garbage, bodies it
 * does not take). Every response must carry a Content-Length, and the
 * connection must stay open or close exactly as HTTP/1.1 says. Each loop is
 * bounded in count, and each wait in time.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  decoder,
  encoder,
  hasCommand,
  Output,
  python,
  type Server,
  sh,
  startServer,
  WAIT_MS,
  withTimeout,
} from "./helpers.ts";
import { writeAll } from "../lib/io.ts";

const HAS_CURL = hasCommand("curl");
const HAS_PYTHON = hasCommand("python3");

/** One response as the wire carried it. */
interface Response {
  status: number;
  /** Header names in lower case; a name sent twice keeps its last value. */
  headers: Map<string, string>;
  body: Uint8Array;
  /** The head's raw text, for messages. */
  head: string;
}

/** A client on a raw socket: sends bytes as given, reads responses framed by Content-Length. */
class RawClient {
  #buf = new Uint8Array(0);
  #eof = false;
  private constructor(readonly conn: Deno.TcpConn) {}

  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  send(data: string | Uint8Array): Promise<void> {
    return writeAll(this.conn, typeof data === "string" ? encoder.encode(data) : data);
  }

  /**
   * The next response (`head`: it answers a HEAD request, so no body follows), or `null` if the
   * server closed first. Every response must say its Content-Length.
   */
  async response(head = false): Promise<Response | null> {
    while (true) {
      const end = indexOf(this.#buf, encoder.encode("\r\n\r\n"));
      if (end !== -1) {
        const text = decoder.decode(this.#buf.subarray(0, end));
        const [statusLine, ...lines] = text.split("\r\n");
        const m = statusLine.match(/^HTTP\/1\.1 (\d{3}) [A-Za-z ]+$/);
        assert.ok(m, `a status line: ${statusLine}`);
        const headers = new Map(lines.map((l) => {
          const colon = l.indexOf(":");
          return [l.slice(0, colon).toLowerCase(), l.slice(colon + 1).trim()];
        }));
        assert.match(headers.get("content-length") ?? "", /^\d+$/, `Content-Length in:\n${text}`);
        const length = head ? 0 : Number(headers.get("content-length"));
        if (this.#buf.length >= end + 4 + length) {
          const body = this.#buf.slice(end + 4, end + 4 + length);
          this.#buf = this.#buf.slice(end + 4 + length);
          return { status: Number(m[1]), headers, body, head: text };
        }
      }
      if (!(await this.#fill())) {
        assert.equal(this.#buf.length, 0, `cut off: ${decoder.decode(this.#buf)}`);
        return null;
      }
    }
  }

  /** True once the server closed with nothing more sent (false: it sent more bytes first). */
  async closed(): Promise<boolean> {
    if (this.#buf.length > 0) return false;
    return !(await this.#fill()) && this.#buf.length === 0;
  }

  /**
   * Whether the server closes within `ms` with nothing more sent; false if it keeps the
   * connection open that long (the read then stays under way until `close()`).
   */
  async closedWithin(ms: number): Promise<boolean> {
    if (this.#buf.length > 0 || this.#waiting) return false;
    const read = this.conn.read(new Uint8Array(1));
    read.catch(() => {}); // (ends with close(), when it is still open)
    this.#waiting = true;
    const timer = new Promise<"open">((resolve) => this.#timer = setTimeout(resolve, ms, "open"));
    const got = await Promise.race([read.catch(() => null), timer]);
    clearTimeout(this.#timer);
    if (got === "open") return false;
    this.#waiting = false;
    if (got === null) this.#eof = true;
    return got === null;
  }
  #waiting = false;
  #timer: ReturnType<typeof setTimeout> | undefined;

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    const chunk = new Uint8Array(64 * 1024);
    let n: number | null;
    try {
      n = await withTimeout(this.conn.read(chunk), WAIT_MS, "a response", () => this.close());
    } catch (err) {
      if (err instanceof Deno.errors.ConnectionReset) n = null; // (a test that expects one says so)
      else throw err;
    }
    if (n === null) {
      this.#eof = true;
      return false;
    }
    const joined = new Uint8Array(this.#buf.length + n);
    joined.set(this.#buf);
    joined.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = joined;
    return true;
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* closed already */ }
  }
}

function indexOf(bytes: Uint8Array, part: Uint8Array): number {
  outer: for (let i = 0; i + part.length <= bytes.length; i++) {
    for (let j = 0; j < part.length; j++) if (bytes[i + j] !== part[j]) continue outer;
    return i;
  }
  return -1;
}

const get = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: test\r\n${extra}\r\n`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `body` with a fresh server (`--port 0` and `flags`), then stops it: exit 0. */
async function withServer(flags: string[], body: (server: Server) => Promise<void>) {
  const server = await startServer("http_server", ["--port", "0", ...flags]);
  try {
    await body(server);
  } finally {
    const done = await server.stop();
    assert.equal(done.code, 0, done.stderr);
  }
}

/** One request on a fresh connection; the response, and whether the server then closed. */
async function once(port: number, request: string | Uint8Array, head = false) {
  const c = await RawClient.connect(port);
  try {
    await c.send(request);
    const response = await c.response(head);
    assert.ok(response, "a response");
    const closes = response.headers.get("connection") === "close";
    return { response, closed: closes ? await c.closed() : await c.closedWithin(200) };
  } finally {
    c.close();
  }
}

Deno.test("http_server: GET / is a page, /echo the head byte for byte (query string too), 404 otherwise", async () => {
  await withServer([], async (server) => {
    const page = (await once(server.port, get("/", "Connection: close\r\n"))).response;
    assert.equal(page.status, 200);
    assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
    assert.match(decoder.decode(page.body), /<h1>Hello from http_server\.ts<\/h1>/);
    assert.match(page.headers.get("date") ?? "", /^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/);
    // Odd but lawful bytes: a tab and a byte over 0x7f in a value, a bare LF ending one line.
    const raw = new Uint8Array([
      ...encoder.encode("GET /echo?x=1&y=%20 HTTP/1.1\r\nHost: test\r\nX-Odd:\ta"),
      0xff,
      ...encoder.encode(" b \nX-Last: z\r\n\r\n"),
    ]);
    const echo = (await once(server.port, raw)).response;
    assert.equal(echo.status, 200);
    assert.equal(echo.headers.get("content-type"), "text/plain; charset=utf-8");
    assert.deepEqual(echo.body, raw);
    const missing = await once(server.port, get("/nope"));
    assert.equal(missing.response.status, 404);
    assert.equal(missing.closed, false, "a 404 keeps the connection");
    await server.stdout.waitFor(/127\.0\.0\.1:\d+ GET \/echo\?x=1&y=%20 HTTP\/1\.1 -> 200/);
    await server.stdout.waitFor(/127\.0\.0\.1:\d+ GET \/nope HTTP\/1\.1 -> 404/);
  });
});

Deno.test("http_server: pipelined requests in one write, or a byte at a time, are answered in order; HEAD has no body", async () => {
  await withServer(["--quiet"], async (server) => {
    const requests = get("/") + `HEAD /echo HTTP/1.1\r\nHost: test\r\n\r\n` + get("/nope") +
      get("/echo?last", "Connection: close\r\n");
    for (const chunk of [requests.length, 1, 7]) {
      const c = await RawClient.connect(server.port);
      try {
        const bytes = encoder.encode(requests);
        for (let at = 0; at < bytes.length; at += chunk) {
          await c.send(bytes.subarray(at, at + chunk));
          if (chunk < 10) await sleep(0); // one read each, or nearly
        }
        const page = await c.response();
        const head = await c.response(true);
        const missing = await c.response();
        const last = await c.response();
        assert.deepEqual(
          [page?.status, head?.status, missing?.status, last?.status],
          [200, 200, 404, 200],
          `in chunks of ${chunk}`,
        );
        // HEAD: the headers GET would have (the length of the echo), and no body.
        assert.equal(
          head!.headers.get("content-length"),
          String(`HEAD /echo HTTP/1.1\r\nHost: test\r\n\r\n`.length),
        );
        assert.equal(decoder.decode(last!.body), get("/echo?last", "Connection: close\r\n"));
        assert.equal(last!.headers.get("connection"), "close");
        assert.ok(await c.closed(), "closed after Connection: close");
      } finally {
        c.close();
      }
    }
  });
});

Deno.test("http_server: keep-alive by default, Connection: close honoured, HTTP/1.0 answered and closed", async () => {
  await withServer([], async (server) => {
    const c = await RawClient.connect(server.port);
    try {
      for (let i = 0; i < 5; i++) {
        await c.send(get(`/echo?n=${i}`));
        const r = await c.response();
        assert.equal(r?.status, 200);
        assert.equal(r!.headers.get("connection"), undefined, "nothing said: it stays open");
      }
    } finally {
      c.close();
    }
    await server.stdout.waitForCount(/GET \/echo\?n=\d/, 5); // the log is written in the background
    const ports = [...server.stdout.text.matchAll(/127\.0\.0\.1:(\d+) GET \/echo\?n=\d/g)];
    assert.equal(ports.length, 5);
    assert.equal(new Set(ports.map((m) => m[1])).size, 1, "five requests, one connection");
    for (
      const request of [
        "GET /echo HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      ]
    ) {
      const r = await once(server.port, request);
      assert.equal(r.response.status, 200);
      assert.equal(r.response.headers.get("connection"), "close");
      assert.ok(r.closed, "HTTP/1.0: closed after the response");
    }
    const closing = await once(server.port, get("/", "Connection: keep-alive, Close\r\n"));
    assert.equal(closing.response.headers.get("connection"), "close");
    assert.ok(closing.closed);
  });
});

Deno.test("http_server: methods and bodies: 405 with Allow, the connection closed only when a body came", async () => {
  await withServer([], async (server) => {
    // No body: the connection is still in step, and stays open.
    const c = await RawClient.connect(server.port);
    try {
      await c.send("DELETE /echo HTTP/1.1\r\nHost: test\r\n\r\n" + get("/"));
      const refused = await c.response();
      assert.equal(refused?.status, 405);
      assert.equal(refused!.headers.get("allow"), "GET, HEAD");
      assert.equal(refused!.headers.get("connection"), undefined);
      assert.equal((await c.response())?.status, 200);
      // Other forms of target, other methods: 405 too, not 400.
      for (const head of ["OPTIONS * HTTP/1.1", "CONNECT example.com:443 HTTP/1.1"]) {
        await c.send(`${head}\r\nHost: test\r\n\r\n`);
        assert.equal((await c.response())?.status, 405, head);
      }
    } finally {
      c.close();
    }
    // A body: answered, then closed (its bytes are never taken for a request).
    const post = await once(
      server.port,
      "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 25\r\n\r\nGET /echo HTTP/1.1\r\n\r\n\r\n",
    );
    assert.equal(post.response.status, 405);
    assert.equal(post.response.headers.get("connection"), "close");
    assert.ok(post.closed, "closed, and the body was not answered as a request");
    for (
      const extra of [
        "Content-Length: 3\r\n",
        "Transfer-Encoding: chunked\r\n",
      ]
    ) {
      const r = await once(server.port, get("/", extra));
      assert.equal(r.response.status, 400, extra);
      assert.match(decoder.decode(r.response.body), /a GET or HEAD with a body/);
      assert.ok(r.closed, extra);
    }
    const empty = await once(server.port, get("/", "Content-Length: 0\r\n"));
    assert.equal(empty.response.status, 200, "Content-Length: 0 is no body");
    assert.equal(empty.closed, false);
  });
});

Deno.test({
  name:
    "http_server: a POST of 4 MB that the client sends whole before reading still gets its 405 (a lingering close, no reset)",
  ignore: !HAS_PYTHON,
  async fn() {
    await withServer(["--quiet"], async (server) => {
      const r = await python(
        `
import socket
s = socket.create_connection(("127.0.0.1", {PORT}), timeout=10)
body = b"x" * (4 * 1024 * 1024)
s.sendall(b"POST / HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body))
try:
    s.sendall(body)
    print("sent")
except OSError as e:
    print("send failed:", type(e).__name__)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.split(b"\\r\\n")[0].decode())
`,
        server.port,
      );
      const out = decoder.decode(r.stdout);
      assert.equal(r.code, 0, r.stderr);
      // Its send went through (the server read and dropped the rest), then it read the 405.
      assert.equal(out, "sent\nHTTP/1.1 405 Method Not Allowed\n", out);
    });
  },
});

Deno.test("http_server: limits: 414 for a long request line, 431 for big headers, each then closed; memory is not the limit", async () => {
  await withServer(["--max-line", "100", "--max-header-bytes", "200"], async (server) => {
    const long = await once(server.port, `GET /${"a".repeat(100)} HTTP/1.1\r\nHost: t\r\n\r\n`);
    assert.equal(long.response.status, 414);
    assert.ok(long.closed);
    const fits = await once(server.port, `GET /${"a".repeat(80)} HTTP/1.1\r\nHost: t\r\n\r\n`);
    assert.equal(fits.response.status, 404);
    // The limit is exact, whether a line ends in CRLF or a bare LF: 100 bytes fit, 101 do not.
    for (const eol of ["\r\n", "\n"]) {
      const line = (n: number) => `GET /${"a".repeat(n - 14)} HTTP/1.1${eol}Host: t${eol}${eol}`;
      assert.equal((await once(server.port, line(100))).response.status, 404, JSON.stringify(eol));
      assert.equal((await once(server.port, line(101))).response.status, 414, JSON.stringify(eol));
    }
    const big = await once(server.port, get("/", `X-Big: ${"b".repeat(200)}\r\n`));
    assert.equal(big.response.status, 431);
    assert.ok(big.closed);
    const many = await once(server.port, get("/", "X-A: 1\r\n".repeat(30)));
    assert.equal(many.response.status, 431);
    // An endless line: refused once it passes the limit, not once it ends.
    const flood = await RawClient.connect(server.port);
    try {
      const writing = flood.send(new Uint8Array(8 * 1024 * 1024).fill(0x41)).catch(() => {});
      const r = await flood.response();
      assert.equal(r?.status, 414);
      await writing;
    } finally {
      flood.close();
    }
    await server.stdout.waitFor(
      /414 URI Too Long: a request line over 100 bytes \(--max-line\); closed/,
    );
    await server.stdout.waitFor(/431 Request Header Fields Too Large: headers over 200 bytes/);
  });
});

Deno.test("http_server: garbage gets 400 and a close (at its first byte when it cannot be a request line); HTTP/2 505", async () => {
  const cases: [string | Uint8Array, number, RegExp][] = [
    [new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]), 400, /byte 0x16 in a request line/], // TLS
    ["ping\n", 400, /METHOD, target and version/],
    ["GET  / HTTP/1.1\r\nHost: t\r\n\r\n", 400, /one space apart/],
    ["G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 400, /method that is not a token/],
    ["GET / HTTP/1.1 \r\nHost: t\r\n\r\n", 400, /one space apart/],
    ["GET / HTTX/1.1\r\nHost: t\r\n\r\n", 400, /no HTTP version/],
    ["GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505, /only HTTP\/1\.x/],
    ["GET / HTTP/1.1\r\n\r\n", 400, /no Host header/],
    ["GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, /more than one Host/],
    ["GET / HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n", 400, /without a colon/],
    ["GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400, /not a token/],
    ["GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n  folded\r\n\r\n", 400, /folded/],
    ["GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400, /byte 0x0d in a header value/],
    ["GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n", 400, /byte 0x00/],
    ["GET /a\rb HTTP/1.1\r\nHost: t\r\n\r\n", 400, /a CR without its LF/],
    ["GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 2\r\n\r\n", 400, /not one number/],
    ["GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400, /not one number/],
    [
      "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
      400,
      /both Content-Length and Transfer-Encoding/,
    ],
    ["GET nope HTTP/1.1\r\nHost: t\r\n\r\n", 400, /neither a path/],
    // Empty lines alone would restart the head's clock forever: two are skipped, a third is 400.
    ["\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n", 400, /empty lines, no request line/],
  ];
  await withServer(["--quiet"], async (server) => {
    for (const [request, status, why] of cases) {
      const label = typeof request === "string" ? JSON.stringify(request) : String(request);
      const r = await once(server.port, request);
      assert.equal(r.response.status, status, label);
      assert.match(decoder.decode(r.response.body), why, label);
      assert.equal(r.response.headers.get("connection"), "close", label);
      assert.ok(r.closed, label);
    }
    // A request line may be absolute (http://host/path), and empty lines before it are skipped.
    const absolute = await once(
      server.port,
      "\r\n\r\nGET http://test/echo?q HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert.equal(absolute.response.status, 200);
    assert.equal(
      decoder.decode(absolute.response.body),
      "GET http://test/echo?q HTTP/1.1\r\nHost: t\r\n\r\n",
    );
  });
});

Deno.test("http_server: a slowloris gets 408 at --header-timeout from its first byte, whatever it trickles; others are served meanwhile", async () => {
  await withServer(["--header-timeout", "0.6", "--idle-timeout", "30"], async (server) => {
    const slow = await RawClient.connect(server.port);
    let trickling = true;
    const trickle = (async () => {
      await slow.send("GET / HTTP/1.1\r\nHost: t\r\n");
      for (let i = 0; i < 40 && trickling; i++) { // a header byte every 50 ms, 2 s at most
        await slow.send("X").catch(() => trickling = false);
        await sleep(50);
      }
    })();
    const t0 = performance.now();
    try {
      const other = await once(server.port, get("/"));
      assert.equal(other.response.status, 200, "served while the slowloris trickles");
      const r = await slow.response();
      const ms = performance.now() - t0;
      assert.equal(r?.status, 408);
      assert.match(
        decoder.decode(r!.body),
        /no whole request head within 0\.6 s \(--header-timeout\)/,
      );
      assert.ok(ms < 1600, `408 after ${ms.toFixed(0)} ms`);
      assert.ok(await slow.closed());
    } finally {
      trickling = false;
      await trickle;
      slow.close();
    }
    await server.stdout.waitFor(/408 Request Timeout: no whole request head within 0\.6 s/);
  });
});

Deno.test("http_server: an idle keep-alive connection is closed after --idle-timeout, without a word; a silent new one too", async () => {
  await withServer(["--idle-timeout", "0.5"], async (server) => {
    const c = await RawClient.connect(server.port);
    const silent = await RawClient.connect(server.port);
    try {
      await c.send(get("/"));
      assert.equal((await c.response())?.status, 200);
      const t0 = performance.now();
      assert.ok(await c.closed(), "closed with no bytes");
      const ms = performance.now() - t0;
      assert.ok(ms > 300 && ms < 1500, `closed after ${ms.toFixed(0)} ms`);
      assert.ok(await silent.closed(), "a connection that never sent a byte");
    } finally {
      c.close();
      silent.close();
    }
    await server.stdout.waitFor(/idle for 0\.5 s, disconnected/);
  });
});

Deno.test({
  name:
    "http_server: a client that pipelines requests and never reads is closed within 2x --idle-timeout",
  ignore: !HAS_PYTHON,
  async fn() {
    await withServer(["--idle-timeout", "1", "--quiet"], async (server) => {
      const t0 = performance.now();
      const r = await python(
        `
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", {PORT}))
s.settimeout(20)
chunk = b"GET /echo HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n" * 1000
sent = 0
try:
    while sent < 256 * 1024 * 1024:
        s.sendall(chunk)
        sent += len(chunk)
    print("never blocked")
except OSError as e:
    print("closed after", sent, "bytes:", type(e).__name__)
`,
        server.port,
      );
      const ms = performance.now() - t0;
      assert.match(decoder.decode(r.stdout), /closed after/, r.stderr);
      await server.stdout.waitFor(/idle for 1 s, disconnected/);
      assert.ok(ms < 3000 + 2000, `closed after ${ms.toFixed(0)} ms`);
      const next = await once(server.port, get("/"));
      assert.equal(next.response.status, 200);
    });
  },
});

/** 20 clients that pipeline 100 requests at a time and read every response, for 3 s. */
const FLOOD = `
import socket, sys, threading, time
port = int(sys.argv[1])
request = b"GET /echo HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n"
def response_size():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(request)
    data = b""
    while b"\\r\\n\\r\\n" not in data or len(data) < data.index(b"\\r\\n\\r\\n") + 4 + len(request):
        data += s.recv(65536)
    s.close()
    return len(data)
size = response_size()
end = time.time() + 3
answered = [0]
def flood():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    while time.time() < end:
        s.sendall(request * 100)
        left = 100 * size
        while left > 0:
            left -= len(s.recv(min(left, 262144)))
        answered[0] += 100
    s.close()
threads = [threading.Thread(target=flood) for _ in range(20)]
for t in threads: t.start()
print("flooding", flush=True)
for t in threads: t.join()
print("answered", answered[0], flush=True)
`;

Deno.test({
  name:
    "http_server: a probe among 20 clients flooding it with pipelined requests is answered within 700 ms",
  ignore: !HAS_PYTHON,
  async fn() {
    await withServer(["--quiet"], async (server) => {
      const flood = new Deno.Command("python3", {
        args: ["-c", FLOOD, String(server.port)],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const out = new Output(flood.stdout);
      const err = new Output(flood.stderr);
      const probe = await RawClient.connect(server.port);
      try {
        await out.waitFor("flooding");
        let worst = 0;
        for (let i = 0; i < 20; i++) { // 20 probes, 100 ms apart: within the 3 s of flood
          const t0 = performance.now();
          await probe.send(get("/"));
          assert.equal((await probe.response())?.status, 200);
          worst = Math.max(worst, performance.now() - t0);
          await sleep(100);
        }
        const answered = Number((await out.waitFor(/answered (\d+)/))[1]);
        console.log(`  probe worst ${worst.toFixed(0)} ms; the flood had ${answered} answers`);
        assert.ok(worst < 700, `the probe waited ${worst.toFixed(0)} ms`);
        assert.ok(answered >= 2000, `only ${answered} flood requests answered`);
      } finally {
        probe.close();
        const timer = setTimeout(() => flood.kill("SIGKILL"), WAIT_MS);
        const status = await flood.status;
        clearTimeout(timer);
        await Promise.all([out.done, err.done]);
        assert.ok(status.success, `the flood's clients: ${err.text}`);
      }
    });
  },
});

Deno.test("http_server: --max-conns: the next client gets 503 with Retry-After, and is closed; a place frees when one leaves", async () => {
  await withServer(["--max-conns", "2"], async (server) => {
    const held = [await RawClient.connect(server.port), await RawClient.connect(server.port)];
    try {
      for (const c of held) {
        await c.send(get("/"));
        assert.equal((await c.response())?.status, 200);
      }
      const busy = await once(server.port, get("/"));
      assert.equal(busy.response.status, 503);
      assert.equal(busy.response.headers.get("retry-after"), "1");
      assert.ok(busy.closed);
      held[0].close();
      let served = false;
      for (let i = 0; i < 50 && !served; i++) {
        served = (await once(server.port, get("/"))).response.status === 200;
        if (!served) await sleep(20);
      }
      assert.ok(served, "served once a place is free");
    } finally {
      for (const c of held) c.close();
    }
    await server.stdout.waitFor(/turned away, server full \(--max-conns\)/);
  });
});

Deno.test("http_server: 200 clients at once, 10 keep-alive requests each, every one answered exactly; resets mid-request harm nobody", async () => {
  await withServer(["--quiet"], async (server) => {
    await Promise.all(Array.from({ length: 200 }, async (_, i) => {
      const c = await RawClient.connect(server.port);
      try {
        for (let j = 0; j < 10; j++) {
          await c.send(get(`/echo?client=${i}&n=${j}`));
          const r = await c.response();
          assert.equal(decoder.decode(r!.body), get(`/echo?client=${i}&n=${j}`));
        }
      } finally {
        c.close();
      }
    }));
    const steady = await RawClient.connect(server.port);
    try {
      for (let i = 0; i < 50; i++) {
        const rude = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        await writeAll(rude, encoder.encode(get("/").repeat(200) + "GET /half"));
        await rude.read(new Uint8Array(1)); // responses left unread: close() sends RST
        rude.close();
        await steady.send(get(`/echo?${i}`));
        assert.equal((await steady.response())?.status, 200);
      }
    } finally {
      steady.close();
    }
    await server.stdout.waitFor(/connection reset by client|client went away/);
  });
});

Deno.test("http_server: Ctrl+C: a request under way is answered with Connection: close, idle connections closed, exit 0 within 2 s", async () => {
  const server = await startServer("http_server", ["--port", "0", "--trace"]);
  const idle = await RawClient.connect(server.port);
  const busy = await RawClient.connect(server.port);
  try {
    await idle.send(get("/"));
    assert.equal((await idle.response())?.status, 200);
    await busy.send("GET /echo HTTP/1.1\r\nHo");
    await server.stderr.waitFor(/read 22 B "GET \/echo HTTP\/1\.1\\r\\nHo"/);
    const t0 = performance.now();
    server.kill("SIGINT");
    assert.ok(await idle.closed(), "the idle connection is closed");
    const ms = performance.now() - t0;
    assert.ok(ms < 1000, `at once, not at the end of the drain: after ${ms.toFixed(0)} ms`);
    await busy.send("st: t\r\n\r\n");
    const r = await busy.response();
    assert.equal(r?.status, 200);
    assert.equal(r!.headers.get("connection"), "close");
    assert.ok(await busy.closed());
    const done = await server.finished(5000);
    assert.equal(done.code, 0, done.stderr);
    assert.ok(performance.now() - t0 < 2000);
    assert.match(done.stdout, /http_server: shut down/);
  } finally {
    idle.close();
    busy.close();
    server.kill("SIGKILL");
    await server.finished();
  }
});

Deno.test({
  name:
    "http_server: curl: -v, several URLs on one connection (--http1.1), HEAD (-I), HTTP/1.0, a POST",
  ignore: !HAS_CURL,
  async fn() {
    await withServer([], async (server) => {
      const base = `http://127.0.0.1:${server.port}`;
      const many = await sh(
        `curl -sS -v --http1.1 ${base}/ ${base}/echo?from=curl ${base}/nope -o /dev/null -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\\n'`,
      );
      assert.equal(many.code, 0, many.stderr);
      assert.equal(
        decoder.decode(many.stdout),
        "200 1\n200 0\n404 0\n",
        "three answers, one connection",
      );
      assert.match(many.stderr, /Re-using existing connection/);
      assert.match(many.stderr, /< Content-Length: 314/);
      const echo = await sh(`curl -sS ${base}/echo?a=b`);
      assert.match(
        decoder.decode(echo.stdout),
        /^GET \/echo\?a=b HTTP\/1\.1\r\nHost: 127\.0\.0\.1:\d+\r\nUser-Agent: curl\/[\d.]+\r\nAccept: \*\/\*\r\n\r\n$/,
      );
      const head = await sh(`curl -sS -I ${base}/`);
      assert.match(
        decoder.decode(head.stdout),
        /^HTTP\/1\.1 200 OK\r\n[\s\S]*Content-Length: 314\r\n/,
      );
      const old = await sh(`curl -sS -v --http1.0 ${base}/echo`);
      assert.match(decoder.decode(old.stdout), /^GET \/echo HTTP\/1\.0\r\n/);
      assert.match(old.stderr, /< Connection: close/);
      const post = await sh(`curl -sS -i -d 'a=1' ${base}/echo`);
      assert.match(
        decoder.decode(post.stdout),
        /^HTTP\/1\.1 405 Method Not Allowed\r\n[\s\S]*Allow: GET, HEAD\r\n/,
      );
    });
  },
});

Deno.test({
  name: "http_server: Python's http.client keeps one connection for GET, HEAD, 404 and 405",
  ignore: !HAS_PYTHON,
  async fn() {
    await withServer([], async (server) => {
      const r = await python(
        `
import http.client
c = http.client.HTTPConnection("127.0.0.1", {PORT}, timeout=10)
sockets = set()
for method, path in [("GET", "/"), ("HEAD", "/"), ("GET", "/echo?py"), ("GET", "/x"), ("DELETE", "/")]:
    c.request(method, path)
    sockets.add(id(c.sock))
    r = c.getresponse()
    body = r.read()
    print(method, path, r.status, r.getheader("Content-Length"), len(body), r.getheader("Allow"))
print("connections:", len(sockets))
`,
        server.port,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        decoder.decode(r.stdout),
        new RegExp(
          [
            "GET / 200 314 314 None",
            "HEAD / 200 314 0 None",
            "GET /echo\\?py 200 (\\d+) \\1 None",
            "GET /x 404 28 28 None",
            "DELETE / 405 (\\d+) \\2 GET, HEAD",
            "connections: 1",
            "",
          ].join("\n"),
        ),
      );
    });
  },
});

Deno.test({
  name: "http_server: the one-liner: printf a request | nc -N prints the response and ends",
  ignore: !hasCommand("nc"),
  async fn() {
    await withServer([], async (server) => {
      const r = await sh(
        `printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' | nc -N 127.0.0.1 ${server.port}`,
        5000,
      );
      assert.equal(r.code, 0, r.stderr);
      const text = decoder.decode(r.stdout);
      assert.match(text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n<!doctype html>/);
      assert.match(text, /<\/html>\n$/);
    });
  },
});

Deno.test({
  name:
    "http_server: a second Ctrl+C while a non-reader holds the drain: 'exiting at once', exit 130",
  ignore: !HAS_PYTHON,
  async fn() {
    const server = await startServer("http_server", ["--port", "0", "--quiet"]);
    // Pipelines requests and never reads: the server is stuck writing the responses it owes.
    const holder = new Deno.Command("python3", {
      args: [
        "-c",
        `
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.settimeout(1)
chunk = b"GET /echo HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n" * 1000
try:
    for _ in range(10000):
        s.sendall(chunk)
    print("never stalled", flush=True)
except socket.timeout:
    print("stalled", flush=True)
sys.stdin.read()
`,
        String(server.port),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const out = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      const first = await withTimeout(out.read(), 20_000, "the non-reader's sends to stall");
      assert.equal(first.value?.trim(), "stalled");
      server.kill("SIGINT");
      await sleep(500); // past the 300 ms in which two signals count as one Ctrl+C
      const t0 = performance.now();
      server.kill("SIGINT");
      const done = await server.finished(5000);
      assert.equal(done.code, 130, done.stdout + done.stderr);
      assert.ok(performance.now() - t0 < 1000);
      assert.equal(
        done.stdout.trimEnd().split("\n").at(-1),
        "http_server: second Ctrl+C, exiting at once (1 client cut off)",
      );
    } finally {
      server.kill("SIGKILL");
      await server.finished();
      await holder.stdin.close().catch(() => {});
      await out.cancel();
      await holder.status;
    }
  },
});
