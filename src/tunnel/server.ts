// Tunnel server mode (ghostunnel `server`): terminates mTLS, admits peers whose
// certificate chains to the trust bundle AND whose SPIFFE ID is on the allow-list,
// and forwards plaintext to a local target. New certificates apply to new
// handshakes (setSecureContext); open connections are untouched.
import net from "node:net";
import tls from "node:tls";
import { isAllowed, peerSpiffeId, validatePatterns } from "./authz.js";
import { TunnelFlagError } from "./flag-error.js";
import type { CredentialSource } from "./credentials.js";
import { createTunnelMetrics } from "./metrics.js";
import {
  emptyStats,
  serveTunnel,
  spliceAccepted,
  track,
  TunnelCertificate,
  type RunningTunnel,
} from "./runtime.js";
import { secureContextOptions, type TlsVersion } from "./tls-context.js";
import { joinHostPort, splitHostPort } from "../net/listen.js";
import { classifyTlsFailure } from "../net/tls-failure.js";
import { silentLog, type Log } from "../log/logger.js";

export type { RunningTunnel, TunnelStats } from "./runtime.js";

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
  /** `log.child({ component: "tunnel" })` from the CLI's logger. */
  logger?: Log;
  processMetrics?: boolean;
  /** The addresses of a --listen or --status host name; default the system resolver. */
  resolveHost?: (host: string) => Promise<string[]>;
  /** How long to wait for the first certificate. Default 30 s. */
  readyTimeoutMs?: number;
}

export async function startTunnelServer(o: TunnelServerOptions): Promise<RunningTunnel> {
  const log = o.logger ?? silentLog;
  if (!o.allowAll && o.allow.length === 0)
    throw new TunnelFlagError(
      "tunnel server needs --allow <spiffe-id-or-pattern> (repeatable) or --allow-all: it admits no one otherwise",
    );
  validatePatterns(o.allow, "--allow");
  const target = splitHostPort(o.target, "--target");
  const listen = splitHostPort(o.listen, "--listen");
  if (o.status) splitHostPort(o.status, "--status");
  const minVersion = o.minVersion ?? "TLSv1.3";
  const metrics = createTunnelMetrics(o.processMetrics ?? false);
  const stats = emptyStats();
  const first = await o.credentials.ready(o.readyTimeoutMs);
  const certificate = new TunnelCertificate(first, metrics, stats, log);

  const sockets = new Set<net.Socket>();
  let context = secureContextOptions(first, minVersion);
  /** Every server made, one per listen address: a reload reaches each. */
  const servers: tls.Server[] = [];
  const stopFollowing = certificate.follow(o.credentials, (c) => {
    const next = secureContextOptions(c, minVersion);
    for (const s of servers) s.setSecureContext(next);
    context = next;
  });

  const onClientError = (err: Error, sock: tls.TLSSocket): void => {
    stats.handshakeErrors++;
    metrics.connections.inc({ result: "handshake_error" });
    // Port scanners and plaintext probes fail here all day long: debug, not info.
    log.debug(
      { peer: sock.remoteAddress, reason: classifyTlsFailure(err, "server").reason },
      "TLS handshake refused",
    );
  };

  const onSecureConnection = (sock: tls.TLSSocket): void => {
    track(sockets, sock);
    sock.on("error", () => {});
    if (!sock.authorized) {
      stats.handshakeErrors++;
      metrics.connections.inc({ result: "handshake_error" });
      refusedClientCertificate(log, sock);
      sock.destroy();
      return;
    }
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
    track(sockets, upstream);
    upstream.once("connect", () => {
      spliceAccepted(sock, upstream, metrics, stats);
      log.debug({ peer: sock.remoteAddress, spiffeId: id.uri }, "connection accepted");
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
  };

  const create = (): tls.Server => {
    const server = tls.createServer({
      ...context,
      requestCert: true,
      // The client's certificate is checked in onSecureConnection, before anything is
      // forwarded: Node's own rejection closes the socket without a word (an expired client
      // certificate surfaced as "socket hang up"), and this says which certificate and why.
      rejectUnauthorized: false,
      // Workload certificates carry no DNS names; clients verify our SPIFFE ID instead.
    });
    server.on("tlsClientError", onClientError);
    server.on("secureConnection", onSecureConnection);
    servers.push(server);
    return server;
  };

  const tunnel = await serveTunnel({
    create,
    listenAddress: o.listen,
    statusAddress: o.status,
    ...(o.resolveHost ? { resolveHost: o.resolveHost } : {}),
    log,
    mode: "server",
    details: () => ({ target: o.target, allow: o.allowAll ? ["*"] : o.allow }),
    credentials: o.credentials,
    certificate,
    metrics,
    stats,
    sockets,
    stopFollowing,
  });
  log.info(
    {
      listen: joinHostPort(listen.host, tunnel.port),
      target: o.target,
      allow: o.allow,
      spiffeId: certificate.own.spiffeId,
    },
    "tunnel server listening",
  );
  return tunnel;
}

/**
 * Logs why a client's certificate was refused, naming it (SPIFFE ID, serial, validity): at
 * warn, since a mesh client whose certificate expired or is not trusted is a problem to fix;
 * a client that sent none (probes, plain TLS clients) at debug, like other failed handshakes.
 */
function refusedClientCertificate(log: Log, sock: tls.TLSSocket): void {
  const cert = sock.getPeerCertificate();
  if (!cert || !("raw" in cert) || !cert.raw) {
    log.debug(
      { peer: sock.remoteAddress, reason: "the client sent no certificate" },
      "TLS handshake refused",
    );
    return;
  }
  const code =
    sock.authorizationError instanceof Error
      ? sock.authorizationError.message
      : String(sock.authorizationError);
  log.warn(
    {
      peer: sock.remoteAddress,
      reason: classifyTlsFailure(code, "server").reason,
      code,
      spiffeId: cert.subjectaltname,
      serial: cert.serialNumber,
      notBefore: cert.valid_from,
      notAfter: cert.valid_to,
      issuer: Object.entries(cert.issuer ?? {})
        .map(([k, v]) => `${k}=${String(v)}`)
        .join(", "),
    },
    "TLS handshake refused: the client's certificate",
  );
}
