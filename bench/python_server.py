# A Python `selectors` line server (as in the Python docs' echo example), the
# second peer of the benchmark: answers every line with "OK ... <line>".
# Usage: python3 bench/python_server.py PORT   (prints "listening on 127.0.0.1:PORT")
import selectors, socket, sys, signal

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sel = selectors.DefaultSelector()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0))
srv.listen(1024)
srv.setblocking(False)
sel.register(srv, selectors.EVENT_READ)
print(f"listening on 127.0.0.1:{srv.getsockname()[1]}", flush=True)
pending = {}

while True:
    for key, _ in sel.select():
        if key.fileobj is srv:
            conn, _ = srv.accept()
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pending[conn] = b""
            sel.register(conn, selectors.EVENT_READ)
            continue
        conn = key.fileobj
        try:
            data = conn.recv(65536)
        except ConnectionError:
            data = b""
        if not data:
            sel.unregister(conn)
            del pending[conn]
            conn.close()
            continue
        buf = pending[conn] + data
        *lines, pending[conn] = buf.split(b"\n")
        if lines:
            conn.setblocking(True)  # simple and correct: send every reply in full
            try:
                conn.sendall(b"".join(b"OK ... " + l + b"\n" for l in lines))
            except OSError:  # the client reset: forget it, as on a failed recv
                sel.unregister(conn)
                del pending[conn]
                conn.close()
                continue
            conn.setblocking(False)
