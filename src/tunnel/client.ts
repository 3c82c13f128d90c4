// Tunnel client mode (ghostunnel `client`): accepts plaintext locally and
// originates mTLS to a tunnel server, verifying the server's certificate against
// the trust bundle and its SPIFFE ID against --verify-spiffe-id (workload
// certificates carry no DNS names, so hostname checks do not apply).
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
import { createContext, type TlsVersion } from "./tls-context.js";
import { joinHostPort, splitHostPort } from "../net/listen.js";
import { classifyTlsFailure } from "../net/tls-failure.js";
import { silentLog, type Log } from "../log/logger.js";

export interface TunnelClientOptions {
  /** `host:port` to accept plaintext on (keep it on loopback). */
  listen: string;
  /** `host:port` of the tunnel server. */
  connect: string;
  /** SPIFFE IDs or patterns the server must present. */
  verifySpiffeId: string[];
  credentials: CredentialSource;
  /** SNI to send; default none (the address is an IP or the server does not care). */
  serverName?: string;
  minVersion?: TlsVersion;
  status?: string;
  /** `log.child({ component: "tunnel" })` from the CLI's logger. */
  logger?: Log;
  processMetrics?: boolean;
  /** The addresses of a --listen or --status host name; default the system resolver. */
  resolveHost?: (host: string) => Promise<string[]>;
  readyTimeoutMs?: number;
  /** Handshake timeout. Default 10 s. */
  handshakeTimeoutMs?: number;
}

export async function startTunnelClient(o: TunnelClientOptions): Promise<RunningTunnel> {
  const log = o.logger ?? silentLog;
  if (o.verifySpiffeId.length === 0)
    throw new TunnelFlagError(
      "tunnel client needs --verify-spiffe-id <spiffe-id-or-pattern>: without it any workload of the mesh could impersonate the server",
    );
  validatePatterns(o.verifySpiffeId, "--verify-spiffe-id");
  const listen = splitHostPort(o.listen, "--listen");
  if (o.status) splitHostPort(o.status, "--status");
  const remote = splitHostPort(o.connect, "--connect");
  const minVersion = o.minVersion ?? "TLSv1.3";
  const metrics = createTunnelMetrics(o.processMetrics ?? false);
  const stats = emptyStats();
  const first = await o.credentials.ready(o.readyTimeoutMs);
  let ctx = createContext(first, minVersion);
  const certificate = new TunnelCertificate(first, metrics, stats, log);
  // Only new connections use the new context; established ones keep theirs.
  const stopFollowing = certificate.follow(o.credentials, (c) => {
    ctx = createContext(c, minVersion);
  });

  const sockets = new Set<net.Socket>();
  const create = (): net.Server =>
    net.createServer((plain) => {
      track(sockets, plain);
      plain.on("error", () => {});
      let identityError: Error | undefined;
      const secure = tls.connect({
        host: remote.host,
        port: remote.port,
        secureContext: ctx,
        ...(o.serverName ? { servername: o.serverName } : {}),
        rejectUnauthorized: true,
        checkServerIdentity: (_host, cert) => {
          try {
            const id = peerSpiffeId(cert);
            if (isAllowed(id, o.verifySpiffeId)) return undefined;
            identityError = new Error(
              `server presented ${id.uri}, which is not among --verify-spiffe-id ${o.verifySpiffeId.join(", ")}`,
            );
          } catch (err) {
            identityError = err as Error;
          }
          return identityError;
        },
      });
      track(sockets, secure);
      secure.setTimeout(o.handshakeTimeoutMs ?? 10_000, () => {
        if (!secure.authorized) secure.destroy(new Error("TLS handshake timed out"));
      });
      secure.once("secureConnect", () => {
        secure.setTimeout(0);
        spliceAccepted(plain, secure, metrics, stats);
      });
      secure.once("error", (err) => {
        if (secure.authorized) return; // splice handles errors after the handshake
        if (identityError) {
          stats.denied++;
          metrics.connections.inc({ result: "server_identity_error" });
          log.warn(
            { connect: o.connect, reason: identityError.message },
            "refusing the server: wrong SPIFFE ID",
          );
        } else {
          stats.handshakeErrors++;
          metrics.connections.inc({ result: "handshake_error" });
          log.warn(
            { connect: o.connect, reason: classifyTlsFailure(err).reason },
            "cannot establish mTLS to the server",
          );
        }
        plain.destroy();
      });
    });

  const tunnel = await serveTunnel({
    create,
    listenAddress: o.listen,
    statusAddress: o.status,
    ...(o.resolveHost ? { resolveHost: o.resolveHost } : {}),
    log,
    mode: "client",
    details: () => ({ connect: o.connect, verifySpiffeId: o.verifySpiffeId }),
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
      connect: o.connect,
      spiffeId: certificate.own.spiffeId,
    },
    "tunnel client listening",
  );
  return tunnel;
}
