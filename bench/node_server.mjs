// A straightforward Node `net` line server, the peer the benchmark compares
// against: answers every line with "OK ... <line>", one write per 'data' event.
// Usage: node bench/node_server.mjs PORT   (prints "listening on 127.0.0.1:PORT")
import net from "node:net";

const OK = Buffer.from("OK ... ");
const server = net.createServer((sock) => {
  sock.setNoDelay(true);
  let pending = Buffer.alloc(0);
  sock.on("data", (data) => {
    const buf = pending.length ? Buffer.concat([pending, data]) : data;
    const out = [];
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
      out.push(OK, buf.subarray(start, nl + 1));
      start = nl + 1;
    }
    pending = buf.subarray(start);
    if (out.length) sock.write(Buffer.concat(out));
  });
  sock.on("end", () => sock.end());
  sock.on("error", () => sock.destroy());
});
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
