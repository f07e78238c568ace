// The chat room of scripts/chat_server.ts written on Node's `net`, the peer
// bench/chat_bench.ts compares it with. Same protocol: `* name?`, a name (1-32
// bytes of UTF-8, no spaces or control characters, unique), then every line
// goes to every other client as `name: line`; joins and leaves announced; a
// client whose unsent bytes (sock.writableLength) would pass 256 KiB is told
// `ERR too slow, disconnected` and dropped; lines longer than 1 KiB are refused.
// Usage: node bench/chat_node.mjs PORT   (prints "listening on 127.0.0.1:PORT")
import net from "node:net";

const MAX_LINE = 1024;
const MAX_QUEUE = 256 * 1024;
const text = (s) => Buffer.from(`${s}\n`);
const ASK_NAME = text("* name?");
const BAD_NAME = text("ERR a name is 1 to 32 bytes of UTF-8, no spaces or control characters");
const TOO_SLOW = text("ERR too slow, disconnected");
const TOO_LONG = text("ERR line too long");
const NEWLINE = text("");
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const clients = new Set();
const names = new Set();

function send(c, buf) {
  if (c.done) return;
  if (c.sock.writableLength + buf.length > MAX_QUEUE) {
    c.done = true;
    c.sock.end(TOO_SLOW); // after what is already buffered, like ours
    setTimeout(() => c.sock.destroy(), 1000).unref();
    queueMicrotask(() => leave(c));
    return;
  }
  c.sock.write(buf);
}

function broadcast(from, buf) {
  for (const c of clients) if (c !== from && c.name) send(c, buf);
}

function leave(c) {
  if (!c.name || !names.delete(c.name)) return;
  broadcast(c, text(`* ${c.name} left`));
}

function checkName(bytes) {
  let name;
  try {
    name = utf8.decode(bytes);
  } catch {
    return BAD_NAME;
  }
  if (bytes.length < 1 || bytes.length > 32 || /[\s\p{C}]/u.test(name)) return BAD_NAME;
  return names.has(name) ? text(`ERR the name ${name} is taken`) : name;
}

const server = net.createServer((sock) => {
  sock.setNoDelay(true);
  const c = { sock, name: "", prefix: null, done: false };
  clients.add(c);
  let pending = Buffer.alloc(0);
  send(c, ASK_NAME);
  sock.on("data", (data) => {
    if (c.done) return;
    const buf = pending.length ? Buffer.concat([pending, data]) : data;
    const out = [];
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
      let line = buf.subarray(start, nl);
      start = nl + 1;
      if (line.length && line[line.length - 1] === 13) line = line.subarray(0, line.length - 1);
      if (line.length > MAX_LINE) return refuse();
      if (c.name) {
        out.push(c.prefix, line, NEWLINE);
        continue;
      }
      const name = checkName(line);
      if (typeof name !== "string") {
        send(c, name);
        send(c, ASK_NAME);
        continue;
      }
      const others = [...names].slice(0, 20);
      c.name = name;
      c.prefix = Buffer.from(`${name}: `);
      names.add(name);
      send(
        c,
        text(
          `* welcome ${name}; ${
            others.length ? `here: ${others.join(", ")}` : "nobody else is here"
          }`,
        ),
      );
      broadcast(c, text(`* ${name} joined`));
    }
    pending = buf.subarray(start);
    if (out.length) broadcast(c, Buffer.concat(out));
    if (pending.length > MAX_LINE + 1) refuse();
  });
  function refuse() {
    c.done = true;
    sock.end(TOO_LONG);
    leave(c);
  }
  sock.on("end", () => sock.end());
  sock.on("close", () => {
    clients.delete(c);
    leave(c);
  });
  sock.on("error", () => sock.destroy());
});

server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
