// What both tunnel modes (server.ts, client.ts) do around their connections: follow the
// credential source, account for accepted connections, listen, serve /_status and close.
import type net from "node:net";
import type { CredentialSource, TlsCredentials } from "./credentials.js";
import { splice } from "./forward.js";
import type { TunnelMetrics } from "./metrics.js";
import { startStatusServer, type StatusServer } from "./status.js";
import { describeOwn, type OwnCertificate } from "./tls-context.js";
import type { Log } from "../log/logger.js";

export interface TunnelStats {
  accepted: number;
  denied: number;
  handshakeErrors: number;
  targetErrors: number;
  open: number;
  reloads: number;
}

export interface RunningTunnel {
  /** Port the tunnel listens on. */
  port: number;
  statusPort?: number;
  metrics: TunnelMetrics;
  stats(): TunnelStats;
  status(): Record<string, unknown> & { ready: boolean };
  close(): Promise<void>;
}

export function emptyStats(): TunnelStats {
  return { accepted: 0, denied: 0, handshakeErrors: 0, targetErrors: 0, open: 0, reloads: 0 };
}

/** The tunnel's own certificate (for /_status and the expiry metric), replaced on every reload. */
export class TunnelCertificate {
  own: OwnCertificate;

  constructor(
    first: TlsCredentials,
    private readonly metrics: TunnelMetrics,
    private readonly stats: TunnelStats,
    private readonly log: Log,
  ) {
    this.own = describeOwn(first);
    metrics.certExpiry.set(this.own.notAfter.getTime() / 1000);
  }

  /**
   * On each change of `source`, `install` puts the new credentials in place for new handshakes
   * (established connections keep theirs); when it throws, the previous certificate stays.
   * Returns the unsubscribe function.
   */
  follow(source: CredentialSource, install: (c: TlsCredentials) => void): () => void {
    return source.onChange(() => {
      const c = source.current();
      if (!c) return;
      try {
        install(c);
        this.own = describeOwn(c);
        this.metrics.certExpiry.set(this.own.notAfter.getTime() / 1000);
        this.metrics.reloads.inc();
        this.stats.reloads++;
        this.log.info(
          { spiffeId: this.own.spiffeId, notAfter: this.own.notAfter.toISOString() },
          "tunnel reloaded its certificate",
        );
      } catch (err) {
        this.log.error(
          { err: (err as Error).message },
          "cannot load the new certificate; keeping the previous one",
        );
      }
    });
  }
}

/** Counts an accepted connection as open until `splice` closes it. */
export function spliceAccepted(
  accepted: net.Socket,
  other: net.Socket,
  metrics: TunnelMetrics,
  stats: TunnelStats,
): void {
  stats.accepted++;
  stats.open++;
  metrics.connections.inc({ result: "accepted" });
  splice(accepted, other, metrics, () => {
    stats.open--;
  });
}

/** Keeps `sock` in `sockets` until it closes (close() destroys whatever is left). */
export function track(sockets: Set<net.Socket>, sock: net.Socket): void {
  sockets.add(sock);
  sock.on("close", () => sockets.delete(sock));
}

export interface ServeOptions {
  server: net.Server;
  /** As given (`--listen`), for the error message. */
  listenAddress: string;
  listen: { host: string; port: number };
  /** `host:port` for the status port, when wanted. */
  statusAddress?: string;
  mode: "server" | "client";
  /** The mode's own /_status fields, between `listen` and `credentials`. */
  details: () => Record<string, unknown>;
  credentials: CredentialSource;
  certificate: TunnelCertificate;
  metrics: TunnelMetrics;
  stats: TunnelStats;
  sockets: Set<net.Socket>;
  /** Unsubscribes from credential changes. */
  stopFollowing: () => void;
}

/** Listens, starts the status port when asked, and returns the running tunnel. */
export async function serveTunnel(o: ServeOptions): Promise<RunningTunnel> {
  const { server, listen, metrics, stats, sockets } = o;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new Error(`cannot listen on ${o.listenAddress}: ${err.message}`)));
    server.listen(listen.port, listen.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : listen.port;
  const status = (): Record<string, unknown> & { ready: boolean } => {
    const own = o.certificate.own;
    return {
      ready: own.notAfter.getTime() > Date.now(),
      mode: o.mode,
      listen: `${listen.host}:${port}`,
      ...o.details(),
      credentials: o.credentials.description,
      certificate: { spiffeId: own.spiffeId, serial: own.serial, notAfter: own.notAfter.toISOString() },
      connections: { ...stats },
    };
  };
  let statusServer: StatusServer | undefined;
  if (o.statusAddress) statusServer = await startStatusServer(o.statusAddress, status, metrics);
  return {
    port,
    ...(statusServer ? { statusPort: statusServer.port } : {}),
    metrics,
    stats: () => ({ ...stats }),
    status,
    close: async () => {
      o.stopFollowing();
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
      await statusServer?.close();
    },
  };
}
