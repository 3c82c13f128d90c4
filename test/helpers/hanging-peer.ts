// A real TCP peer that accepts connections and never answers: a Vault (or any HTTP peer) that
// hangs. It reads and drops what it is sent, so the end of each connection is seen. And a proxy
// to a real Vault that starts hanging when told to, to hang any chosen step of a conversation.
import { connect, createServer, type Socket } from "node:net";

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

export interface StallingProxy {
  /** http://127.0.0.1:<port>, forwarding to the target until stall(). */
  url: string;
  /** From now on nothing clients send is forwarded, so no request is answered: the peer hangs. */
  stall(): void;
  /** Bytes clients sent since stall() (a request that will never be answered). */
  held(): number;
  close(): void;
}

/** A TCP proxy to `target` (a real Vault) that starts hanging when told to, mid-conversation. */
export async function startStallingProxy(target: string): Promise<StallingProxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  let stalled = false;
  let held = 0;
  const server = createServer((client) => {
    const upstream = connect(Number(port), hostname.replace(/^\[|\]$/g, ""));
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => undefined);
      s.on("close", () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on("data", (d: Buffer) => (stalled ? (held += d.length) : upstream.write(d)));
    upstream.on("data", (d: Buffer) => client.write(d));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    stall: () => (stalled = true),
    held: () => held,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
