// Tunnel server mode (ghostunnel `server`): terminates mTLS, admits peers whose
// certificate chains to the trust bundle AND whose SPIFFE ID is on the allow-list,
// and forwards plaintext to a local target. New certificates apply to new
// handshakes (setSecureContext); open connections are untouched.
import net from "node:net";
import tls from "node:tls";
import { isAllowed, peerSpiffeId, validatePatterns } from "./authz.js";
import type { CredentialSource } from "./credentials.js";
import { splice } from "./forward.js";
import { createTunnelMetrics, type TunnelMetrics } from "./metrics.js";
import { splitHostPort, startStatusServer, type StatusServer } from "./status.js";
import { describeOwn, secureContextOptions, type TlsVersion } from "./tls-context.js";

export interface TunnelLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface TunnelServerOptions {
  /** `host:port` to accept mTLS on. Port 0 picks a free one. */
  listen: string;
  /** `host:port` of the plaintext service to forward to. */
  target: string;
  /** SPIFFE IDs or `spiffe://td/ns/<ns>/*` patterns admitted. */
  allow: string[];
  /** Admit any peer whose certificate chains to the trust bundle (no SPIFFE ID check). */
  allowAll?: boolean;
  credentials: CredentialSource;
  /** Default TLSv1.3. */
  minVersion?: TlsVersion;
  /** `host:port` for /_status and /_metrics. */
  status?: string;
  logger?: TunnelLogger;
  processMetrics?: boolean;
  /** How long to wait for the first certificate. Default 30 s. */
  readyTimeoutMs?: number;
}

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

const NOOP: TunnelLogger = { debug() {}, info() {}, warn() {}, error() {} };

export function emptyStats(): TunnelStats {
  return { accepted: 0, denied: 0, handshakeErrors: 0, targetErrors: 0, open: 0, reloads: 0 };
}

export async function startTunnelServer(o: TunnelServerOptions): Promise<RunningTunnel> {
  const log = o.logger ?? NOOP;
  if (!o.allowAll && o.allow.length === 0)
    throw new Error(
      "tunnel server needs --allow <spiffe-id-or-pattern> (repeatable) or --allow-all: it admits no one otherwise",
    );
  validatePatterns(o.allow, "--allow");
  const target = splitHostPort(o.target, "--target");
  const listen = splitHostPort(o.listen, "--listen");
  const minVersion = o.minVersion ?? "TLSv1.3";
  const metrics = createTunnelMetrics(o.processMetrics ?? false);
  const stats = emptyStats();
  const first = await o.credentials.ready(o.readyTimeoutMs);
  let own = describeOwn(first);
  metrics.certExpiry.set(own.notAfter.getTime() / 1000);

  const sockets = new Set<net.Socket>();
  const server = tls.createServer({
    ...secureContextOptions(first, minVersion),
    requestCert: true,
    rejectUnauthorized: true,
    // Workload certificates carry no DNS names; clients verify our SPIFFE ID instead.
  });

  const offChange = o.credentials.onChange(() => {
    const c = o.credentials.current();
    if (!c) return;
    try {
      server.setSecureContext(secureContextOptions(c, minVersion));
      own = describeOwn(c);
      metrics.certExpiry.set(own.notAfter.getTime() / 1000);
      metrics.reloads.inc();
      stats.reloads++;
      log.info(
        { spiffeId: own.spiffeId, notAfter: own.notAfter.toISOString() },
        "tunnel reloaded its certificate",
      );
    } catch (err) {
      log.error({ err: (err as Error).message }, "cannot load the new certificate; keeping the previous one");
    }
  });

  server.on("tlsClientError", (err, sock) => {
    stats.handshakeErrors++;
    metrics.connections.inc({ result: "handshake_error" });
    log.info({ peer: sock.remoteAddress, err: err.message }, "TLS handshake refused");
  });

  server.on("secureConnection", (sock: tls.TLSSocket) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    let id;
    try {
      id = peerSpiffeId(sock.getPeerCertificate());
    } catch (err) {
      stats.denied++;
      metrics.connections.inc({ result: "denied" });
      log.warn({ peer: sock.remoteAddress, reason: (err as Error).message }, "connection denied");
      sock.destroy();
      return;
    }
    if (!o.allowAll && !isAllowed(id, o.allow)) {
      stats.denied++;
      metrics.connections.inc({ result: "denied" });
      log.warn(
        { peer: sock.remoteAddress, spiffeId: id.uri, allow: o.allow },
        "connection denied: SPIFFE ID is not on the allow-list",
      );
      sock.destroy();
      return;
    }
    const upstream = net.connect({ host: target.host, port: target.port });
    sockets.add(upstream);
    upstream.on("close", () => sockets.delete(upstream));
    upstream.once("connect", () => {
      stats.accepted++;
      stats.open++;
      metrics.connections.inc({ result: "accepted" });
      log.debug({ peer: sock.remoteAddress, spiffeId: id.uri }, "connection accepted");
      splice(sock, upstream, metrics, () => {
        stats.open--;
      });
    });
    upstream.once("error", (err) => {
      if (upstream.connecting || !upstream.remotePort) {
        stats.targetErrors++;
        metrics.connections.inc({ result: "target_error" });
        log.error(
          { target: o.target, err: err.message },
          "cannot reach the target; closing the client connection",
        );
        sock.destroy();
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new Error(`cannot listen on ${o.listen}: ${err.message}`)));
    server.listen(listen.port, listen.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : listen.port;

  const status = (): Record<string, unknown> & { ready: boolean } => ({
    ready: own.notAfter.getTime() > Date.now(),
    mode: "server",
    listen: `${listen.host}:${port}`,
    target: o.target,
    allow: o.allowAll ? ["*"] : o.allow,
    credentials: o.credentials.description,
    certificate: { spiffeId: own.spiffeId, serial: own.serial, notAfter: own.notAfter.toISOString() },
    connections: { ...stats },
  });
  let statusServer: StatusServer | undefined;
  if (o.status) statusServer = await startStatusServer(o.status, status, metrics);
  log.info(
    { listen: `${listen.host}:${port}`, target: o.target, allow: o.allow, spiffeId: own.spiffeId },
    "tunnel server listening",
  );

  return {
    port,
    ...(statusServer ? { statusPort: statusServer.port } : {}),
    metrics,
    stats: () => ({ ...stats }),
    status,
    close: async () => {
      offChange();
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
      await statusServer?.close();
    },
  };
}
