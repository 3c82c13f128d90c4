// A real TCP peer that accepts connections and never answers: a Vault (or any HTTP peer) that
// hangs. It reads and drops what it is sent, so the end of each connection is seen.
import { createServer, type Socket } from "node:net";

export interface HangingPeer {
  /** http://127.0.0.1:<port> */
  url: string;
  /** Connections accepted so far. */
  accepted(): number;
  /** Accepted connections that have since been closed (by the client). */
  closed(): number;
  close(): void;
}

export async function startHangingPeer(): Promise<HangingPeer> {
  const sockets: Socket[] = [];
  let closed = 0;
  const server = createServer((s) => {
    sockets.push(s);
    s.resume();
    s.on("close", () => closed++);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    accepted: () => sockets.length,
    closed: () => closed,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
