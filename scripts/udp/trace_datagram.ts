/**
 * `--trace` for udp_server.ts and udp_client.ts. A datagram socket has no connection for
 * `traceConn` (lib/trace.ts) to wrap, so each datagram is printed where the script sends or
 * receives it: its peer, the time since the program started, its size and its bytes (escaped and
 * cut at 64, `quoted` of lib/trace.ts): `trace 127.0.0.1:8892 +0.052s sent 6 B "ping 1"`.
 *
 * @module
 */

import { formatAddress } from "../../lib/text.ts";
import { quoted } from "../../lib/trace.ts";

/** Prints one trace line for a datagram `event` (`print`: `logError` of lib/log.ts in both). */
export function traceDatagram(
  event: "sent" | "received",
  bytes: Uint8Array,
  peer: Deno.Addr,
  print: (line: string) => void,
): void {
  const at = (performance.now() / 1000).toFixed(3);
  print(`trace ${formatAddress(peer)} +${at}s ${event} ${bytes.length} B ${quoted(bytes)}`);
}
