// The peer bench/http_bench.ts compares scripts/http_server.ts with: Node's own `http` module
// serving the same page at GET / (the same bytes, text/html), 404 elsewhere, keep-alive as Node
// does it by default.
// Usage: node bench/http_node.mjs PORT   (prints "listening on 127.0.0.1:PORT")
import http from "node:http";
import { readFileSync } from "node:fs";

// The page, read from http_server.ts itself, so that both send the same body.
const source = readFileSync(new URL("../scripts/http_server.ts", import.meta.url), "utf8");
const PAGE = Buffer.from(source.match(/const PAGE = encoder\.encode\(`([\s\S]*?)`\);/)[1]);
const NOT_FOUND = Buffer.from("404 Not Found: no such page\n");

const server = http.createServer((req, res) => {
  const found = req.url === "/" || req.url.startsWith("/?");
  res.writeHead(found ? 200 : 404, {
    "Content-Type": found ? "text/html; charset=utf-8" : "text/plain; charset=utf-8",
    "Content-Length": found ? PAGE.length : NOT_FOUND.length,
  });
  res.end(req.method === "HEAD" ? undefined : found ? PAGE : NOT_FOUND);
});
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
