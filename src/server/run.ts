// Wires a configured CA server: authority, authenticators, TLS gRPC API, HTTP side port,
// trust bundle file. Returns handles so tests, the demo and benchmarks can run it in-process.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import type { Server as HttpServer } from "node:http";
import type { ServerConfig } from "../config/schema.js";
import { createLogger, type Logger } from "../log/logger.js";
import type { Authority } from "../authority/authority.js";
import { createAuthority } from "../authority/factory.js";
import type { Authenticator } from "../identity/authenticator.js";
import { authenticateCaller } from "../identity/chain-of-authenticators.js";
import { ClientCertAuthenticator } from "../identity/client-cert.js";
import { JwtAuthenticator } from "../identity/jwt.js";
import { kubernetesIntegration, type KubernetesIntegration } from "../kube/server-integration.js";
import { ensureLocalIssuer, localIssuerName } from "../identity/local-issuer.js";
import { parseCertificates } from "../pki/certificate.js";
import { startGrpcCa, ReloadableServerCredentials } from "./grpc-ca.js";
import { startHttp } from "./http.js";
import { createCaMetrics, recordIntermediateExpiry, type CaMetrics } from "./metrics.js";
import { issueServingCert, keepServingCertFresh, type ServingCert } from "./serving-cert.js";
import type { CaPolicy } from "./ca-service.js";

export interface CaServerHandle {
  grpcPort: number;
  httpPort: number;
  authority: Authority;
  metrics: CaMetrics;
  log: Logger;
  /** Current trust bundle, PEM. */
  rootsPem(): string;
  /** Where the trust bundle file is written. */
  rootCertFile: string;
  /** TokenReview, root publisher, istiod-tls writer, when the config has a `kubernetes:` section. */
  kubernetes: KubernetesIntegration | undefined;
  close(): Promise<void>;
}

export interface StartOptions {
  log?: Logger;
  /** Use this authority instead of building one from config (tests, demo). */
  authority?: Authority;
  /** Extra authenticators tried after the configured ones (e.g. Kubernetes TokenReview). */
  extraAuthenticators?: Authenticator[];
  /** Skip Node's default process metrics (several servers in one process). */
  defaultMetrics?: boolean;
}

function writeAtomic(path: string, data: string): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode: 0o644 });
  renameSync(tmp, path);
}

/** Remembers the intermediates in chains we issue, to complete client-certificate chains. */
function rememberIntermediates(authority: Authority): {
  authority: Authority;
  intermediates: () => string[];
} {
  const seen: string[] = [];
  const wrapped: Authority = {
    kind: authority.kind,
    start: () => authority.start(),
    trustBundle: () => authority.trustBundle(),
    ready: () => authority.ready(),
    close: () => authority.close(),
    sign: async (request, identity) => {
      const issued = await authority.sign(request, identity);
      for (const pem of issued.intermediatesPem) {
        if (seen.includes(pem)) continue;
        seen.push(pem);
        if (seen.length > 32) seen.shift(); // old intermediates age out after rotations
      }
      return issued;
    },
  };
  return { authority: wrapped, intermediates: () => seen };
}

export async function buildAuthenticators(
  config: ServerConfig,
  authority: Authority,
  log: Logger,
  intermediates: () => string[] = () => [],
): Promise<Authenticator[]> {
  const list: Authenticator[] = [];
  const jlog = log.child({ component: "jwt" });
  const jwtLog = { info: (m: string) => jlog.info(m), warn: (m: string) => jlog.warn(m) };
  if (config.authentication.clientCertificate)
    list.push(
      new ClientCertAuthenticator({
        trustDomain: config.trustDomain,
        trustBundle: () => authority.trustBundle(),
        intermediates,
      }),
    );
  for (const j of config.authentication.jwt) {
    const jwks = j.jwksFile
      ? { file: j.jwksFile }
      : j.jwksUrl
        ? { url: j.jwksUrl }
        : { oidcIssuer: j.issuer };
    list.push(
      new JwtAuthenticator({
        trustDomain: config.trustDomain,
        issuer: j.issuer,
        audiences: j.audiences,
        jwks,
        log: jwtLog,
      }),
    );
  }
  if (config.authentication.localIssuer) {
    const paths = await ensureLocalIssuer(config.dataDir);
    list.push(
      new JwtAuthenticator({
        trustDomain: config.trustDomain,
        issuer: localIssuerName(config.trustDomain),
        audiences: ["istio-ca"],
        jwks: { file: paths.jwksFile },
        log: jwtLog,
      }),
    );
  }
  return list;
}

export async function startCaServer(config: ServerConfig, opts: StartOptions = {}): Promise<CaServerHandle> {
  const log = opts.log ?? createLogger({ level: config.log.level, format: config.log.format });
  const dataDir = resolve(config.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const metrics = createCaMetrics(opts.defaultMetrics ?? true);
  const base =
    opts.authority ??
    createAuthority(config.authority, {
      trustDomain: config.trustDomain,
      dataDir,
      log,
      vault: config.vault,
    });
  // Backends that reload signing material report it; failures are counted and alerting can use them.
  const reloading = base as Partial<{ onReload(l: (e: { ok: boolean }) => void): () => void }>;
  reloading.onReload?.((e) => metrics.caReloads.inc({ result: e.ok ? "ok" : "refused" }));
  const tracked = rememberIntermediates(base);
  const authority = tracked.authority;
  try {
    await authority.start();
  } catch (err) {
    // Release what a half-started backend holds (Vault keep-alive sockets, timers, watchers).
    await authority.close().catch(() => undefined);
    throw err;
  }
  metrics.authorityReady.set({ authority: authority.kind }, authority.ready().ready ? 1 : 0);

  const rootCertFile = resolve(config.rootCertFile ?? join(dataDir, "root-cert.pem"));
  let lastRoots = "";
  // Assigned once the serving certificate exists; publishRoots updates its trust bundle.
  // eslint-disable-next-line prefer-const
  let credentials: ReloadableServerCredentials | undefined;
  const publishRoots = (): void => {
    const roots = authority.trustBundle().join("");
    metrics.authorityReady.set({ authority: authority.kind }, authority.ready().ready ? 1 : 0);
    if (!roots || roots === lastRoots) return;
    lastRoots = roots;
    credentials?.updateTrustBundle(roots);
    writeAtomic(rootCertFile, roots);
    const earliest = Math.min(...parseCertificates(roots).map((c) => c.notAfter.getTime()));
    metrics.rootExpiry.set(earliest / 1000);
    metrics.istio.setExpiry({ root: earliest / 1000 });
    log.info({ file: rootCertFile }, "wrote trust bundle");
  };
  publishRoots();
  const rootsTimer = setInterval(publishRoots, 5000);
  rootsTimer.unref();

  const kube = config.kubernetes
    ? kubernetesIntegration(config.kubernetes, { trustDomain: config.trustDomain, log })
    : undefined;
  const authenticators = [
    ...(await buildAuthenticators(config, authority, log, tracked.intermediates)),
    ...(kube?.authenticators ?? []),
    ...(opts.extraAuthenticators ?? []),
  ];
  for (const a of authenticators) {
    if (a instanceof JwtAuthenticator)
      await a
        .ready()
        .catch((err: Error) => log.warn({ err: err.message }, "JWT keys not loaded yet; will retry on use"));
  }
  if (authenticators.length === 0)
    log.warn(
      "no caller authentication is configured: every CreateCertificate will be refused (configure authentication.jwt or localIssuer)",
    );
  const policy: CaPolicy = {
    trustDomain: config.trustDomain,
    defaultTtlSeconds: config.certificates.defaultTtl,
    maxTtlSeconds: config.certificates.maxTtl,
    allowCommonName: config.certificates.allowCommonName,
    trustedNodeAccounts: new Set(config.authentication.trustedNodeAccounts),
  };

  const sc = config.servingCertificate;
  const servingOpts = {
    authority,
    trustDomain: config.trustDomain,
    namespace: sc.namespace,
    serviceAccount: sc.serviceAccount,
    dnsNames: sc.dnsNames,
    ipAddresses: sc.ipAddresses,
    ttlSeconds: sc.ttl,
    log,
    onRenew: (c: ServingCert) => {
      credentials?.update(c.certChainPem, c.keyPem);
      metrics.servingCertExpiry.set(c.notAfter.getTime() / 1000);
      recordIntermediateExpiry(metrics, c.certChainPem);
    },
  };
  const serving = await issueServingCert(servingOpts);
  credentials = new ReloadableServerCredentials(
    serving.certChainPem,
    serving.keyPem,
    authority.trustBundle().join(""),
  );
  metrics.servingCertExpiry.set(serving.notAfter.getTime() / 1000);
  recordIntermediateExpiry(metrics, serving.certChainPem);
  const stopRenewal = keepServingCertFresh(servingOpts, serving);

  let grpcServer: grpc.Server | undefined;
  let httpServer: HttpServer | undefined;
  try {
    const g = await startGrpcCa({
      deps: { authority, policy, authenticate: (creds) => authenticateCaller(authenticators, creds) },
      credentials,
      address: config.listen.grpc,
      log,
      metrics,
    });
    grpcServer = g.server;
    const h = await startHttp({
      address: config.listen.http,
      authority,
      metrics,
      serving: () => grpcServer !== undefined,
    });
    httpServer = h.server;
    await kube?.start(() => authority.trustBundle(), authority);
    log.info(
      {
        grpc: `${config.listen.grpc.replace(/:\d+$/, "")}:${g.port}`,
        http: `${config.listen.http.replace(/:\d+$/, "")}:${h.port}`,
        authority: authority.kind,
        trustDomain: config.trustDomain,
      },
      "meshvault CA server ready",
    );
    return {
      grpcPort: g.port,
      httpPort: h.port,
      authority,
      metrics,
      log,
      rootCertFile,
      rootsPem: () => authority.trustBundle().join(""),
      kubernetes: kube,
      close: async () => {
        await kube?.close();
        stopRenewal();
        clearInterval(rootsTimer);
        await new Promise<void>((r) => grpcServer?.tryShutdown(() => r()) ?? r());
        await new Promise<void>((r) => httpServer?.close(() => r()) ?? r());
        await authority.close();
      },
    };
  } catch (err) {
    await kube?.close();
    stopRenewal();
    clearInterval(rootsTimer);
    grpcServer?.forceShutdown();
    httpServer?.close();
    await authority.close();
    throw err;
  }
}

/** Reads the trust bundle a running server wrote (for clients in the same data dir). */
export function readRootCertFile(path: string): string {
  return readFileSync(path, "utf8");
}
