// What both tunnel modes (server.ts, client.ts) do around their connections: follow the
// credential source, account for accepted connections, listen, serve /_status and close.
import type net from "node:net";
import type { CredentialSource, TlsCredentials } from "./credentials.js";
import { splice } from "./forward.js";
import type { TunnelMetrics } from "./metrics.js";
import { startStatusServer, type StatusServer } from "./status.js";
import { describeOwn, type OwnCertificate } from "./tls-context.js";
import { closeServers, joinHostPort, listenOnEveryAddress, splitHostPort } from "../net/listen.js";
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
  /**
   * A new, unbound server with its handlers: one per address `listenAddress` resolves to, as
   * the CA server's ports do (net/listen.ts), so `localhost` is reached over ::1 and 127.0.0.1.
   */
  create: () => net.Server;
  /** As given (`--listen`). */
  listenAddress: string;
  /** `host:port` for the status port, when wanted. */
  statusAddress?: string;
  /** The addresses of a listen host name; default the system resolver. */
  resolveHost?: (host: string) => Promise<string[]>;
  log: Log;
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
  const { metrics, stats, sockets } = o;
  const listen = splitHostPort(o.listenAddress, "--listen");
  const { servers, port } = await listenOnEveryAddress({
    address: o.listenAddress,
    what: "the tunnel (--listen)",
    create: o.create,
    log: o.log,
    ...(o.resolveHost ? { resolve: o.resolveHost } : {}),
  }).catch((err: unknown) => {
    o.stopFollowing();
    throw err;
  });
  const status = (): Record<string, unknown> & { ready: boolean } => {
    const own = o.certificate.own;
    return {
      ready: own.notAfter.getTime() > Date.now(),
      mode: o.mode,
      listen: joinHostPort(listen.host, port),
      ...o.details(),
      credentials: o.credentials.description,
      certificate: { spiffeId: own.spiffeId, serial: own.serial, notAfter: own.notAfter.toISOString() },
      connections: { ...stats },
    };
  };
  let statusServer: StatusServer | undefined;
  try {
    if (o.statusAddress)
      statusServer = await startStatusServer(o.statusAddress, status, metrics, o.log, o.resolveHost);
  } catch (err) {
    o.stopFollowing();
    await closeServers(servers);
    throw err;
  }
  return {
    port,
    ...(statusServer ? { statusPort: statusServer.port } : {}),
    metrics,
    stats: () => ({ ...stats }),
    status,
    close: async () => {
      o.stopFollowing();
      const closed = closeServers(servers);
      for (const s of sockets) s.destroy();
      await closed;
      await statusServer?.close();
    },
  };
}
