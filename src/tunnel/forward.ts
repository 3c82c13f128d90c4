// Splices two sockets together and accounts for the bytes; whichever side closes
// or fails first closes the other.
import type { Duplex } from "node:stream";
import type { TunnelMetrics } from "./metrics.js";

export function splice(accepted: Duplex, other: Duplex, metrics: TunnelMetrics, onClose: () => void): void {
  let done = false;
  metrics.open.inc();
  const finish = (): void => {
    if (done) return;
    done = true;
    metrics.open.dec();
    accepted.destroy();
    other.destroy();
    onClose();
  };
  accepted.on("data", (b: Buffer) => metrics.bytes.inc({ direction: "in" }, b.length));
  other.on("data", (b: Buffer) => metrics.bytes.inc({ direction: "out" }, b.length));
  accepted.pipe(other);
  other.pipe(accepted);
  accepted.on("error", finish);
  other.on("error", finish);
  accepted.on("close", finish);
  other.on("close", finish);
}
