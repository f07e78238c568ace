/**
 * End-to-end: scripts/tls_server.ts and scripts/tls_client.ts (lesson 14, TLS) as real
 * processes, with each other, with OpenSSL's s_client, with Python's `ssl`, and with the
 * certificates a learner gets wrong, made here with openssl (another name, another CA, expired,
 * self-signed): each is one line on both sides, and the server keeps serving. Then the
 * handshake's own robustness: a client that never sends its ClientHello is dropped after
 * --handshake-timeout while another is served, resets mid-handshake, plain TCP both ways,
 * Ctrl+C, flags and certificate files.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeAll } from "../lib/io.ts";
import {
  decoder,
  denoPeer,
  encoder,
  hasCommand,
  Output,
  python,
  readAll,
  ROOT,
  Running,
  runTask,
  scriptCommand,
  type Server,
  sh,
  startServer,
  WAIT_MS,
  withTimeout,
} from "./helpers.ts";

const HAS_OPENSSL = hasCommand("openssl");
const HAS_PYTHON = hasCommand("python3");
const CERTS = `${ROOT}certs`;

/** Runs tls_client with `args` as `deno run -A` (it may read the test's certificates), to its end. */
async function client(args: string[], input?: string) {
  const { argv, cwd } = scriptCommand("tls_client", "run -A");
  const running = new Running([...argv, ...args], input === undefined ? "null" : "piped", cwd);
  if (input !== undefined) {
    const w = running.child.stdin.getWriter();
    await w.write(encoder.encode(input));
    await w.close();
  }
  return await running.finished(WAIT_MS);
}

/** A scratch folder of test certificates, made with openssl and the project's openssl.cnf. */
class TestCerts {
  readonly dir = Deno.makeTempDirSync({ prefix: "tls-test-certs-" });

  /**
   * Signs a P-256 leaf `name` for `san`, valid from `start` to `end` (openssl's YYYYMMDDHHMMSSZ),
   * with `caName`'s CA (the learning one, or one of these made by `ca()`). Returns its paths.
   */
  async leaf(
    name: string,
    san: string,
    { ca = `${CERTS}/ca`, start = "20250101000000Z", end = "20351231235959Z" } = {},
  ): Promise<string[]> {
    const [cert, key] = [join(this.dir, `${name}.pem`), join(this.dir, `${name}-key.pem`)];
    await this.#openssl(
      `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ${key}`,
      `openssl req -new -key ${key} -subj /CN=${name} -out "$CA_DIR/r.csr"`,
      `SAN='${san}' openssl ca -batch -config ${CERTS}/openssl.cnf -cert ${ca}.pem ` +
        `-keyfile ${ca}-key.pem -in "$CA_DIR/r.csr" -extensions leaf_ext ` +
        `-startdate ${start} -enddate ${end} -notext -out ${cert}`,
    );
    return ["--cert", cert, "--key", key];
  }

  /** A CA of its own (not the learning one): returns the path without `.pem`. */
  async ca(name: string): Promise<string> {
    const base = join(this.dir, name);
    await this.#openssl(
      `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ${base}-key.pem`,
      `openssl req -new -key ${base}-key.pem -subj /CN=${name} -out "$CA_DIR/ca.csr"`,
      `SAN=DNS:x openssl ca -batch -config ${CERTS}/openssl.cnf -selfsign ` +
        `-keyfile ${base}-key.pem -in "$CA_DIR/ca.csr" -extensions ca_ext -days 30 -notext ` +
        `-out ${base}.pem`,
    );
    return base;
  }

  /** The quick self-signed certificate of a tutorial (`openssl req -x509`), which is a CA's. */
  async selfSigned(): Promise<string[]> {
    const [cert, key] = [join(this.dir, "self.pem"), join(this.dir, "self-key.pem")];
    await this.#openssl(
      `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ${key} ` +
        `-out ${cert} -days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost`,
    );
    return ["--cert", cert, "--key", key];
  }

  async #openssl(...commands: string[]): Promise<void> {
    const scratch = Deno.makeTempDirSync({ dir: this.dir });
    const out = await sh(
      `set -e; export CA_DIR=${scratch}; touch $CA_DIR/index.txt; echo 01 > $CA_DIR/serial; ` +
        commands.join(" 2>&1 >/dev/null; ") + " 2>&1 >/dev/null",
    );
    assert.equal(out.code, 0, `openssl: ${decoder.decode(out.stdout)} ${out.stderr}`);
  }

  remove(): void {
    Deno.removeSync(this.dir, { recursive: true });
  }
}

/** A line over TLS from this test, trusting the learning CA: the server still serves. */
async function stillServes(server: Server): Promise<void> {
  const r = await runTask("tls_client", ["--port", String(server.port), "-m", "still there?"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "OK ... still there?\n");
}

async function finish(server: Server): Promise<string> {
  const done = await server.stop();
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stdout, /tls_server: shut down/);
  assert.doesNotMatch(done.stderr, /error|Uncaught/, done.stderr);
  return done.stdout;
}

Deno.test("tls_client and tls_server: lines over TLS, -m repeatable and stdin, localhost, 127.0.0.1 and ::1", async () => {
  const server = await startServer("tls_server", ["--port", "0", "--host", "::"], "run -A");
  try {
    assert.match(server.stdout.text, /listening on \[::\]:\d+ \(TLS\)/);
    const port = String(server.port);
    const m = await runTask("tls_client", ["-p", port, "-m", "temp 21.5", "-m", "door open"]);
    assert.equal(m.code, 0, m.stderr);
    assert.equal(m.stdout, "OK ... temp 21.5\nOK ... door open\n");
    assert.match(m.stderr, /connected to localhost:\d+ over TLS, certificate checked/);
    for (const host of ["127.0.0.1", "::1"]) {
      const r = await runTask("tls_client", ["-p", port, "--host", host], "a\nb\x1b[2J\n");
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "OK ... a\nOK ... b\\x1b[2J\n"); // a reply never drives the terminal
    }
    await server.stdout.waitForCount(/Client \(\S+\) is offline/, 3);
    assert.match(server.stdout.text, /Client \(\[::1\]:\d+\) connected over TLS/);
  } finally {
    await finish(server);
  }
});

Deno.test({
  name:
    "openssl s_client is a second terminal: it checks the chain with -CAfile, a piped line comes back",
  ignore: !HAS_OPENSSL,
  fn: async () => {
    const server = await startServer("tls_server");
    // -quiet waits for the server to close after stdin ends: the test reads the reply, then ends it.
    const child = new Deno.Command("openssl", {
      args: ["s_client", "-connect", `127.0.0.1:${server.port}`, "-CAfile", `${CERTS}/ca.pem`]
        .concat(["-quiet", "-verify_return_error"]),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const [out, err] = [new Output(child.stdout), new Output(child.stderr)];
    const w = child.stdin.getWriter();
    try {
      await w.write(encoder.encode("hello from openssl\n"));
      await out.waitFor("OK ... hello from openssl\n");
      assert.match(err.text, /depth=1 CN = socket-examples learning CA[^]*depth=0 CN = localhost/);
      await server.stdout.waitFor(/Client \(127\.0\.0\.1:\d+\) connected over TLS/);
    } finally {
      await w.close().catch(() => {});
      try {
        child.kill("SIGTERM");
      } catch { /* exited */ }
      await child.status;
      await Promise.all([out.done, err.done]);
    }
    await server.stdout.waitFor(/is offline/); // (it closed without TLS close_notify)
    await finish(server);
  },
});

Deno.test({
  name: "Python's ssl module, trusting certs/ca.pem, talks to tls_server; TLS 1.3",
  ignore: !HAS_PYTHON,
  fn: async () => {
    const server = await startServer("tls_server");
    try {
      const out = await python(
        `
import socket, ssl
ctx = ssl.create_default_context(cafile="${CERTS}/ca.pem")
with socket.create_connection(("127.0.0.1", {PORT})) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"one\\ntwo\\n")
        got = b""
        while got.count(b"\\n") < 2:
            got += s.recv(100)
        print(s.version(), got)
`,
        server.port,
      );
      assert.equal(
        decoder.decode(out.stdout),
        "TLSv1.3 b'OK ... one\\nOK ... two\\n'\n",
        out.stderr,
      );
      await server.stdout.waitFor(/is offline/);
    } finally {
      await finish(server);
    }
  },
});

Deno.test({
  name:
    "wrong name, unknown CA, expired, self-signed: one error line in the client, one log line in the server, which keeps serving",
  ignore: !HAS_OPENSSL,
  fn: async () => {
    const certs = new TestCerts();
    try {
      const otherCa = await certs.ca("other-ca");
      const cases: { server: string[]; client: string[]; error: RegExp; log: RegExp }[] = [
        {
          server: await certs.leaf("other", "DNS:other.test"),
          client: [],
          error:
            /^error: the certificate of localhost:\d+ is not valid for the name 'localhost' \(NotValidForName\); it is for other\.test: connect with a name it holds \(--host\)\n$/,
          log: /the client refused the handshake, alert BadCertificate/,
        },
        {
          server: await certs.leaf("stranger", "DNS:localhost", { ca: otherCa }),
          client: [],
          error:
            /^error: the certificate of localhost:\d+ is signed by a CA we do not trust \(UnknownIssuer\): give the CA that signed it with --ca FILE\n$/,
          log: /alert UnknownCA: it does not trust the CA that signed our certificate/,
        },
        {
          server: await certs.leaf("expired", "DNS:localhost", {
            start: "20200101000000Z",
            end: "20200201000000Z",
          }),
          client: [],
          error:
            /^error: the certificate of localhost:\d+ has expired \(2020-02-01T00:00:00\.000Z\) \(Expired\): the server needs a new one/,
          log: /alert CertificateExpired: our certificate has expired/,
        },
        {
          server: await certs.selfSigned(),
          client: ["--ca", join(certs.dir, "self.pem")],
          error:
            /^error: the certificate of localhost:\d+ is a CA's certificate, not a server's \(CaUsedAsEndEntity\)/,
          log: /alert CertificateUnknown: it refused our certificate/,
        },
      ];
      for (const c of cases) {
        const server = await startServer("tls_server", ["--port", "0", ...c.server], "run -A");
        try {
          const r = await client(["--port", String(server.port), "-m", "hi", ...c.client]);
          assert.equal(r.code, 1, r.stderr);
          assert.match(r.stderr, c.error);
          assert.equal(r.stderr.split("\n").length, 2, r.stderr); // one line
          assert.equal(r.stdout, "");
          await server.stdout.waitFor(c.log);
          // The server goes on: a client that trusts it (Python, told not to check it).
          if (HAS_PYTHON) {
            const ok = await python(
              `import socket, ssl
ctx = ssl._create_unverified_context()
with ctx.wrap_socket(socket.create_connection(("127.0.0.1", {PORT}))) as s:
    s.sendall(b"still\\n"); print(s.recv(100))`,
              server.port,
            );
            assert.equal(decoder.decode(ok.stdout), "b'OK ... still\\n'\n", ok.stderr);
          }
        } finally {
          await finish(server);
        }
      }
    } finally {
      certs.remove();
    }
  },
});

Deno.test("a plain TCP client on the TLS port: it reads a 7-byte TLS alert and EOF; the server logs one line and serves on", async () => {
  const server = await startServer("tls_server");
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await writeAll(conn, encoder.encode("hello\n"));
    const got = await readAll(conn);
    conn.close();
    // An alert record: type 21 (alert), TLS 1.2 on the wire, 2 bytes: fatal (2), decode_error (50).
    assert.deepEqual([...got], [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]);
    await server.stdout.waitFor(
      /127\.0\.0\.1:\d+: not a TLS client \(it sent bytes that are no TLS record: plain TCP\?\)\n/,
    );
    await stillServes(server);
  } finally {
    await finish(server);
  }
});

Deno.test("tls_client against a plain TCP server (socket_server): one error line, not a hang", async () => {
  const plain = await startServer("socket_server");
  try {
    const r = await runTask("tls_client", ["--port", String(plain.port), "-m", "hi"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^connected to|error: localhost:\d+ answered in something that is not TLS: is it a plain TCP server\? \(try socket_client\)\n$/m,
    );
    assert.equal(r.stderr.match(/^error:/gm)?.length, 1, r.stderr);
  } finally {
    await plain.stop();
  }
  // A server that takes the connection and never answers: the handshake is bounded by --timeout.
  const silent = denoPeer(async (conn) => {
    await readAll(conn).catch(() => {}); // until the client gives up
  });
  const started = performance.now();
  const r = await runTask("tls_client", ["--port", silent.port, "--timeout", "0.5"]);
  await silent.done;
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^error: no TLS handshake from localhost:\d+ within 0\.5 s \(--timeout\): is it a TLS server\?\n$/m,
  );
  assert.ok(performance.now() - started < 5000);
  // One that closes at once.
  const closer = denoPeer((conn) => Promise.resolve(conn.close()));
  const c = await runTask("tls_client", ["--port", closer.port]);
  await closer.done;
  assert.match(c.stderr, /error: localhost:\d+ closed the connection during the TLS handshake/);
});

Deno.test("a client that never sends its ClientHello is dropped after --handshake-timeout, and holds nobody up meanwhile", async () => {
  const server = await startServer("tls_server", ["--port", "0", "--handshake-timeout", "1"]);
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const started = performance.now();
    // While it waits, another client shakes hands and is answered.
    await stillServes(server);
    const served = performance.now() - started;
    assert.ok(served < 1000, `served after ${served} ms: it waited for the silent one`);
    await server.stdout.waitFor(
      `127.0.0.1:${silent.localAddr.port}: no TLS handshake within 1 s (--handshake-timeout), disconnected`,
    );
    const dropped = performance.now() - started;
    assert.ok(dropped >= 900 && dropped < 3000, `dropped after ${dropped} ms`);
    // Deno 2.9 (rustls-tokio-stream) keeps the socket of a closed TlsConn open until its
    // handshake ends: the server has forgotten the client, but the kernel closes the socket only
    // once the client sends something (here: bytes that are no ClientHello) or leaves.
    await writeAll(silent, encoder.encode("late\n"));
    const got = await readAll(silent).catch((err) => {
      if (err instanceof Deno.errors.ConnectionReset) return new Uint8Array();
      throw err;
    });
    assert.ok(got.length <= 7, `${got}`); // nothing, or an alert
    console.log(
      `(another client served after ${served.toFixed(0)} ms; ` +
        `the silent one dropped after ${dropped.toFixed(0)} ms)`,
    );
  } finally {
    silent.close();
    await finish(server);
  }
});

Deno.test({
  name: "a client that resets mid-handshake, or leaves, is one log line; the server serves on",
  ignore: !HAS_PYTHON,
  fn: async () => {
    const server = await startServer("tls_server");
    try {
      // Half a ClientHello (a handshake record that announces 512 bytes, 10 sent), then RST;
      // then one that sends the same and closes (FIN).
      for (const [linger, line] of [[1, "connection reset"], [0, "left"]] as const) {
        const out = await python(
          `import socket, struct
s = socket.create_connection(("127.0.0.1", {PORT}))
s.sendall(b"\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xfc\\x03")
if ${linger}:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
print(s.getsockname()[1])
s.close()`,
          server.port,
        );
        assert.equal(out.code, 0, out.stderr);
        const port = decoder.decode(out.stdout).trim();
        await server.stdout.waitFor(`127.0.0.1:${port}: ${line} during the TLS handshake\n`);
      }
      await stillServes(server);
    } finally {
      await finish(server);
    }
  },
});

Deno.test("Ctrl+C: at readiness, and with a client mid-handshake, tls_server stops within 2 s, exit 0", async () => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    const server = await startServer("tls_server");
    server.kill(signal); // the moment it says it listens
    const done = await withTimeout(server.finished(), WAIT_MS, "stop");
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, /tls_server: shut down\n$/);
  }
  const server = await startServer("tls_server");
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  // A TLS client after it: once the server says it is connected, the silent one, accepted
  // before it, is mid-handshake (a connect completes before the server's accept()).
  const caCerts = [await Deno.readTextFile(`${CERTS}/ca.pem`)];
  const tls = await Deno.connectTls({ hostname: "localhost", port: server.port, caCerts });
  try {
    await tls.handshake();
    await server.stdout.waitFor("connected over TLS");
    const started = performance.now();
    server.kill("SIGINT");
    const done = await server.finished();
    const ms = performance.now() - started;
    assert.equal(done.code, 0, done.stderr);
    assert.ok(ms < 2500, `${ms} ms`);
    assert.match(done.stdout, /tls_server: shut down, and closed the 2 clients still connected\n$/);
  } finally {
    silent.close();
    tls.close();
  }
});

Deno.test("--max-conns counts handshakes; one over it is told ERR server busy, in TLS", async () => {
  const server = await startServer("tls_server", ["--port", "0", "--max-conns", "1"]);
  const first = await Deno.connect({ hostname: "127.0.0.1", port: server.port }); // holds the one place
  try {
    const r = await runTask("tls_client", ["--port", String(server.port), "-m", "hi"]);
    assert.equal(r.code, 0, r.stderr); // the reply to its line is the refusal
    assert.equal(r.stdout, "ERR server busy\n");
    await server.stdout.waitFor("turned away, server full (--max-conns)");
  } finally {
    first.close();
    await finish(server);
  }
});

Deno.test("flags and certificate files: usage errors exit 2, files that cannot serve exit 1, one line each", async () => {
  const usage: [string, string[], RegExp][] = [
    ["tls_server", ["--port", "abc"], /^error: invalid --port 'abc'/],
    ["tls_server", ["--handshake-timeout", "-1"], /^error: invalid --handshake-timeout '-1'/],
    ["tls_server", ["--handshake-timeout", "601"], /expected a number of seconds from 0 to 600/],
    ["tls_server", ["--bogus"], /^error: unknown option --bogus/],
    ["tls_client", ["--port", "70000"], /^error: invalid --port '70000'/],
    ["tls_client", ["-m", "two\nlines"], /^error: --message 'two\\nlines' holds a line break/],
  ];
  for (const [script, args, error] of usage) {
    const r = await runTask(script, args);
    assert.equal(r.code, 2, `${script} ${args}: ${r.stderr}`);
    assert.match(r.stderr, error);
    assert.equal(r.stderr.split("\n").length, 2, r.stderr);
  }
  const help = await runTask("tls_server", ["--help"]);
  assert.match(help.stdout, /never use it in production/);
  assert.match(help.stdout, /--handshake-timeout SECONDS .*\(default 10, max 600\)/);
  const dir = Deno.makeTempDirSync({ prefix: "tls-test-files-" });
  try {
    Deno.writeTextFileSync(join(dir, "empty.pem"), "");
    const runtime: [string, string[], string | RegExp][] = [
      [
        "tls_server",
        ["--cert", "certs/nope.pem"],
        "error: cannot read --cert certs/nope.pem: no such file\n",
      ],
      ["tls_server", ["--key", "certs"], "error: cannot read --key certs: a folder, not a file\n"],
      [
        "tls_server",
        ["--cert", "LICENSE"],
        "error: --cert LICENSE holds no PEM certificate (no '-----BEGIN' line for one)\n",
      ],
      [
        "tls_server",
        ["--key", "certs/ca.pem"],
        "error: --key certs/ca.pem holds no PEM private key (no '-----BEGIN' line for one)\n",
      ],
      [
        "tls_server",
        ["--key", "certs/ca-key.pem"],
        "error: --key certs/ca-key.pem is not the private key of --cert certs/localhost.pem\n",
      ],
      [
        "tls_server",
        ["--cert", join(dir, "empty.pem")],
        /^error: --cert \/\S+\/empty\.pem holds no PEM certificate/,
      ],
      [
        "tls_client",
        ["--ca", "certs/nope.pem"],
        "error: cannot read --ca certs/nope.pem: no such file\n",
      ],
    ];
    for (const [script, args, error] of runtime) {
      const { argv, cwd } = scriptCommand(script, "run -A");
      const r = await new Running([...argv, "--port", "0", ...args], "null", cwd).finished();
      assert.equal(r.code, 1, `${script} ${args}: ${r.stderr}`);
      if (typeof error === "string") assert.equal(r.stderr, error);
      else assert.match(r.stderr, error);
      assert.doesNotMatch(r.stdout, /listening/);
    }
    // Under the task, a file outside certs/ is not readable: the line says what to do.
    const outside = await runTask("tls_server", ["--port", "0", "--cert", join(dir, "empty.pem")]);
    assert.equal(outside.code, 1);
    assert.match(
      outside.stderr,
      /^error: cannot read --cert \S+: no permission \(the task may read certs\/ only: put it there, or deno run --allow-read=\S+ \.\.\.\)\n$/,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("--trace shows the conversation decrypted, on both sides", async () => {
  const server = await startServer("tls_server", ["--port", "0", "--trace"]);
  try {
    const r = await runTask("tls_client", ["--port", String(server.port), "--trace", "-m", "ping"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /trace 127\.0\.0\.1:\d+ \+[\d.]+s write 5 B "ping\\n"/);
    assert.match(r.stderr, /read 12 B "OK \.\.\. ping\\n"/);
    await server.stderr.waitFor(/trace 127\.0\.0\.1:\d+ \+[\d.]+s read 5 B "ping\\n"/);
  } finally {
    await finish(server);
  }
});
