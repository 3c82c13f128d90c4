// Tunnel client mode (ghostunnel `client`): accepts plaintext locally and
// originates mTLS to a tunnel server, verifying the server's certificate against
// the trust bundle and its SPIFFE ID against --verify-spiffe-id (workload
// certificates carry no DNS names, so hostname checks do not apply).
import net from "node:net";
import tls from "node:tls";
import { isAllowed, peerSpiffeId, validatePatterns } from "./authz.js";
import type { CredentialSource } from "./credentials.js";
import { splice } from "./forward.js";
import { createTunnelMetrics } from "./metrics.js";
import { emptyStats, type RunningTunnel, type TunnelLogger } from "./server.js";
import { splitHostPort, startStatusServer, type StatusServer } from "./status.js";
import { createContext, describeOwn, type TlsVersion } from "./tls-context.js";

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
  logger?: TunnelLogger;
  processMetrics?: boolean;
  readyTimeoutMs?: number;
  /** Handshake timeout. Default 10 s. */
  handshakeTimeoutMs?: number;
}

const NOOP: TunnelLogger = { debug() {}, info() {}, warn() {}, error() {} };

export async function startTunnelClient(o: TunnelClientOptions): Promise<RunningTunnel> {
  const log = o.logger ?? NOOP;
  if (o.verifySpiffeId.length === 0)
    throw new Error(
      "tunnel client needs --verify-spiffe-id <spiffe-id-or-pattern>: without it any workload of the mesh could impersonate the server",
    );
  validatePatterns(o.verifySpiffeId, "--verify-spiffe-id");
  const listen = splitHostPort(o.listen, "--listen");
  const remote = splitHostPort(o.connect, "--connect");
  const minVersion = o.minVersion ?? "TLSv1.3";
  const metrics = createTunnelMetrics(o.processMetrics ?? false);
  const stats = emptyStats();
  const first = await o.credentials.ready(o.readyTimeoutMs);
  let ctx = createContext(first, minVersion);
  let own = describeOwn(first);
  metrics.certExpiry.set(own.notAfter.getTime() / 1000);

  const offChange = o.credentials.onChange(() => {
    const c = o.credentials.current();
    if (!c) return;
    try {
      // Only new connections use the new context; established ones keep theirs.
      ctx = createContext(c, minVersion);
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

  const sockets = new Set<net.Socket>();
  const server = net.createServer((plain) => {
    sockets.add(plain);
    plain.on("close", () => sockets.delete(plain));
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
    sockets.add(secure);
    secure.on("close", () => sockets.delete(secure));
    secure.setTimeout(o.handshakeTimeoutMs ?? 10_000, () => {
      if (!secure.authorized) secure.destroy(new Error("TLS handshake timed out"));
    });
    secure.once("secureConnect", () => {
      secure.setTimeout(0);
      stats.accepted++;
      stats.open++;
      metrics.connections.inc({ result: "accepted" });
      splice(plain, secure, metrics, () => {
        stats.open--;
      });
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
        log.warn({ connect: o.connect, err: err.message }, "cannot establish mTLS to the server");
      }
      plain.destroy();
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
    mode: "client",
    listen: `${listen.host}:${port}`,
    connect: o.connect,
    verifySpiffeId: o.verifySpiffeId,
    credentials: o.credentials.description,
    certificate: { spiffeId: own.spiffeId, serial: own.serial, notAfter: own.notAfter.toISOString() },
    connections: { ...stats },
  });
  let statusServer: StatusServer | undefined;
  if (o.status) statusServer = await startStatusServer(o.status, status, metrics);
  log.info(
    { listen: `${listen.host}:${port}`, connect: o.connect, spiffeId: own.spiffeId },
    "tunnel client listening",
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
