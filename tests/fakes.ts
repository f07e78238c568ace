/**
 * Stand-ins for the lib's unit tests: readers that deliver bytes the way a
 * network might (in any split, endlessly, or never), and a connected
 * loopback pair.
 *
 * @module
 */

import { closeQuietly } from "../lib/io.ts";

/** A reader that hands out `data` in the given chunk sizes (cycled), then EOF. */
export function chunked(data: Uint8Array, sizes: number[]): {
  reads: number;
  consumed: number;
  read(p: Uint8Array): Promise<number | null>;
} {
  let at = 0;
  let i = 0;
  const source = {
    reads: 0,
    consumed: 0,
    read(p: Uint8Array): Promise<number | null> {
      source.reads++;
      if (at >= data.length) return Promise.resolve(null);
      const n = Math.min(sizes[i++ % sizes.length], p.length, data.length - at);
      p.set(data.subarray(at, at + n));
      at += n;
      source.consumed = at;
      return Promise.resolve(n);
    },
  };
  return source;
}

/** A reader that delivers each of `arrivals` as one read (as far as room allows), then EOF. */
export function arriving(arrivals: string[]): {
  read(p: Uint8Array): Promise<number | null>;
} {
  const queue = arrivals.map((a) => new TextEncoder().encode(a));
  return {
    read(p: Uint8Array): Promise<number | null> {
      const next = queue.shift();
      if (next === undefined) return Promise.resolve(null);
      const n = Math.min(next.length, p.length);
      p.set(next.subarray(0, n));
      if (n < next.length) queue.unshift(next.subarray(n));
      return Promise.resolve(n);
    },
  };
}

/** A reader that never ends and never sends a newline. */
export function endless(): { consumed: number; read(p: Uint8Array): Promise<number | null> } {
  const source = {
    consumed: 0,
    read(p: Uint8Array): Promise<number | null> {
      p.fill(0x41);
      source.consumed += p.length;
      return Promise.resolve(p.length);
    },
  };
  return source;
}

/** A reader whose reads never complete (a silent peer; no socket, so no op to leak). */
export const silent = { read: (): Promise<number | null> => new Promise(() => {}) };

/** A connected pair over 127.0.0.1; `close()` closes all three ends, whatever is already closed. */
export async function loopbackPair(): Promise<{
  listener: Deno.TcpListener;
  client: Deno.TcpConn;
  server: Deno.TcpConn;
  close(): void;
}> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await listener.accept();
  return {
    listener,
    client,
    server,
    close() {
      closeQuietly(client);
      closeQuietly(server);
      closeQuietly(listener);
    },
  };
}
