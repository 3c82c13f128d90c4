// Wires a configured CA server: authority, authenticators, TLS gRPC API, HTTP side port,
// trust bundle file. Returns handles so tests, the demo and benchmarks can run it in-process.
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import type { ServerConfig } from "../config/schema.js";
import { createLogger, type Logger } from "../log/logger.js";
import type { Authority, Readiness } from "../authority/authority.js";
import { backoffDelay, type BackoffPolicy } from "../timing/backoff.js";
import { ConfigError } from "../config/load.js";
import { lockDir, DirLockedError } from "../fs/dir-lock.js";
import { makeDirSync } from "../fs/make-dir.js";
import { VaultConfigError } from "../vault/errors.js";
import { createAuthority } from "../authority/factory.js";
import type { Authenticator } from "../identity/authenticator.js";
import { authenticateCaller } from "../identity/chain-of-authenticators.js";
import { ClientCertAuthenticator } from "../identity/client-cert.js";
import { JwtAuthenticator } from "../identity/jwt.js";
import { kubernetesIntegration, type KubernetesIntegration } from "../kube/server-integration.js";
import { ensureLocalIssuer, localIssuerName } from "../identity/local-issuer.js";
import { parseCertificates } from "../pki/certificate.js";
import { startGrpcCa, ReloadableServerCredentials } from "./grpc-ca.js";
import { issuancePoolFor, type IssuancePool } from "./issuance-pool.js";
import { startHttp } from "./http.js";
import { createCaMetrics, recordIntermediateExpiry, type CaMetrics } from "./metrics.js";
import { issueServingCert, keepServingCertFresh, type ServingCert } from "./serving-cert.js";
import type { CaPolicy } from "./ca-service.js";
import { withRootRotation } from "../rotation/server-hook.js";
import type { RotationView } from "../rotation/rotating-authority.js";

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
  /** The root rotation this server follows (undefined when the authority was passed in). */
  rotation: (() => RotationView) | undefined;
  /**
   * Resolves once the authority has started and the gRPC API serves: already when startCaServer
   * returns, unless the authority could not start yet (then see `readiness()`).
   */
  started: Promise<void>;
  /** What /readyz says right now. */
  readiness(): Readiness;
  /** The issuance worker threads (config `workers`); undefined with workers: 0. */
  issuance: IssuancePool | undefined;
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
  makeDirSync(dirname(path), 0o755);
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
  const jwtLog = log.child({ component: "jwt" });
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

/** Server-level readiness while the authority has not started yet. */
interface StartState {
  started: boolean;
  attempts: number;
  /** Why the last start attempt failed (names the cause and the fix). */
  error: string | undefined;
  nextAttemptAt: Date | undefined;
}

// Start attempts back off up to 5 s, so the server turns ready within seconds of Vault recovering.
const START_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 5000 };

/** Errors no retry can fix: the process should exit (code 2) and the operator fix the configuration. */
function isConfigError(err: unknown): boolean {
  return err instanceof ConfigError || err instanceof VaultConfigError;
}

/** Creates the data directory (bounded, clear failure) and locks it for this server. */
function claimDataDir(configured: string): { dataDir: string; release: () => void } {
  const dataDir = resolve(configured);
  try {
    makeDirSync(dataDir, 0o700);
  } catch (err) {
    throw new ConfigError(
      `dataDir (--data-dir, MESHVAULT_DATA_DIR) ${dataDir} cannot be used: ${(err as Error).message}. Point it at a writable directory`,
    );
  }
  try {
    return { dataDir, release: lockDir(dataDir, "server.lock", "a meshvault server") };
  } catch (err) {
    if (err instanceof DirLockedError)
      throw new ConfigError(`dataDir (--data-dir) ${(err as Error).message}`);
    throw new ConfigError(
      `dataDir (--data-dir, MESHVAULT_DATA_DIR) ${dataDir} cannot be used: ${(err as Error).message}. Point it at a writable directory`,
    );
  }
}

/**
 * Starts the server. Ports are bound (and the data directory locked) before any shared file is
 * written. When the authority cannot start (Vault unreachable, sealed, refusing the login or
 * the policy), the server stays up not ready, says why on /readyz, /_status, in the log and in
 * `meshvault_authority_ready`, and retries with backoff; `started` resolves once it serves.
 * Rejects only for what no retry fixes: configuration (ConfigError, VaultConfigError) and
 * ports that cannot be bound.
 */
export async function startCaServer(config: ServerConfig, opts: StartOptions = {}): Promise<CaServerHandle> {
  const log = opts.log ?? createLogger({ level: config.log.level, format: config.log.format });
  const { dataDir, release } = claimDataDir(config.dataDir);
  const cleanups: (() => Promise<void> | void)[] = [release];
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
  };
  try {
    return await startLocked(config, opts, log, dataDir, cleanups, cleanup);
  } catch (err) {
    await cleanup();
    throw err;
  }
}

async function startLocked(
  config: ServerConfig,
  opts: StartOptions,
  log: Logger,
  dataDir: string,
  cleanups: (() => Promise<void> | void)[],
  cleanup: () => Promise<void>,
): Promise<CaServerHandle> {
  const metrics = createCaMetrics(opts.defaultMetrics ?? true);
  const pool = issuancePoolFor(config.workers, log);
  if (pool) cleanups.push(() => pool.close());
  const base =
    opts.authority ??
    createAuthority(config.authority, {
      trustDomain: config.trustDomain,
      dataDir,
      log,
      vault: config.vault,
      leafSigner: pool?.signLeaf,
    });
  // Backends that reload signing material report it; failures are counted and alerting can use them.
  base.onReload?.((e) => metrics.caReloads.inc({ result: e.ok ? "ok" : "refused" }));
  // Root rotation follows the shared state; when signing moves to the new root the server's
  // own TLS certificate is re-issued under it (assigned below, once servingOpts exists).
  let reissueServing = (): void => {};
  const rotating = opts.authority
    ? undefined
    : withRootRotation(
        base,
        config,
        { trustDomain: config.trustDomain, dataDir, log, vault: config.vault, leafSigner: pool?.signLeaf },
        log,
        () => reissueServing(),
      );
  const outer = rotating ?? base;
  cleanups.push(() => outer.close());
  const tracked = rememberIntermediates(outer);
  const authority = tracked.authority;
  const rootCertFile = resolve(config.rootCertFile ?? join(dataDir, "root-cert.pem"));

  const state: StartState = { started: false, attempts: 0, error: undefined, nextAttemptAt: undefined };
  let grpcServer: grpc.Server | undefined;
  let servingNotAfter: Date | undefined;
  // The current serving chain (leaf first), for the status page.
  let servingChainPem: string | undefined;
  const readiness = (): Readiness => {
    if (!state.started) {
      const retry = state.nextAttemptAt ? `; retrying at ${state.nextAttemptAt.toISOString()}` : "";
      return {
        ready: false,
        reason: state.error
          ? `the ${authority.kind} authority could not start (attempt ${state.attempts}): ${state.error}${retry}`
          : `the ${authority.kind} authority is starting`,
      };
    }
    if (!grpcServer) return { ready: false, reason: "gRPC listener not started" };
    return authority.ready();
  };
  metrics.readiness = () => ({ kind: authority.kind, readiness: readiness() });

  // Held from the start; TLS handshakes fail until the authority has issued the serving certificate.
  const credentials = new ReloadableServerCredentials();
  const kube = config.kubernetes
    ? kubernetesIntegration(config.kubernetes, { trustDomain: config.trustDomain, log })
    : undefined;
  cleanups.push(async () => kube?.close());
  // Filled once the ports are bound (the local issuer writes its keys into the data directory).
  const authenticators: Authenticator[] = [];
  const policy: CaPolicy = {
    trustDomain: config.trustDomain,
    defaultTtlSeconds: config.certificates.defaultTtl,
    maxTtlSeconds: config.certificates.maxTtl,
    allowCommonName: config.certificates.allowCommonName,
    trustedNodeAccounts: new Set(config.authentication.trustedNodeAccounts),
  };
  const g = await startGrpcCa({
    deps: {
      authority,
      policy,
      authenticate: (creds) => authenticateCaller(authenticators, creds),
    },
    credentials,
    address: config.listen.grpc,
    log,
    metrics,
  });
  cleanups.push(() => new Promise<void>((r) => g.server.tryShutdown(() => r())));
  const h = await startHttp({
    address: config.listen.http,
    authority,
    metrics,
    readiness,
    page: {
      trustDomain: config.trustDomain,
      ...(config.vault?.address ? { vaultAddress: config.vault.address } : {}),
      servingChainPem: () => servingChainPem,
    },
    ...(rotating ? { rotation: () => rotating.view() } : {}),
    status: () => {
      const r = readiness();
      return {
        authority: authority.kind,
        trustDomain: config.trustDomain,
        ready: r.ready,
        ...(r.ready
          ? {
              ...(r.detail ? { detail: r.detail } : {}),
              ...(r.until ? { validUntil: r.until.toISOString() } : {}),
            }
          : { reason: r.reason }),
        started: state.started,
        startAttempts: state.attempts,
        grpc: { port: g.port, serving: grpcServer !== undefined },
        servingCertificate: servingNotAfter ? { notAfter: servingNotAfter.toISOString() } : null,
        rootCertFile,
        roots: authority.trustBundle().length,
        ...(rotating ? { rootRotation: rotating.view() } : {}),
      };
    },
  });
  cleanups.push(() => new Promise<void>((r) => h.server.close(() => r())));
  authenticators.push(
    ...(await buildAuthenticators(config, authority, log, tracked.intermediates)),
    ...(kube?.authenticators ?? []),
    ...(opts.extraAuthenticators ?? []),
  );

  let lastRoots = "";
  const publishRoots = (): void => {
    const roots = authority.trustBundle().join("");
    if (!roots || roots === lastRoots) return;
    lastRoots = roots;
    credentials.updateTrustBundle(roots);
    writeAtomic(rootCertFile, roots);
    const earliest = Math.min(...parseCertificates(roots).map((c) => c.notAfter.getTime()));
    metrics.rootExpiry.set(earliest / 1000);
    metrics.istio.setExpiry({ root: earliest / 1000 });
    log.info({ file: rootCertFile }, "wrote trust bundle");
  };

  const rootsTimer = setInterval(publishRoots, 5000);
  rootsTimer.unref();
  cleanups.push(() => clearInterval(rootsTimer));
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
      servingChainPem = c.certChainPem;
      credentials.update(c.certChainPem, c.keyPem);
      servingNotAfter = c.notAfter;
      metrics.servingCertExpiry.set(c.notAfter.getTime() / 1000);
      recordIntermediateExpiry(metrics, c.certChainPem);
    },
  };
  reissueServing = () =>
    void issueServingCert(servingOpts).then(
      (c) => {
        servingOpts.onRenew(c);
        log.info(
          { notAfter: c.notAfter.toISOString() },
          "re-issued the CA server's TLS certificate under the new signer",
        );
      },
      (err: Error) =>
        log.error(
          { err: err.message },
          "cannot re-issue the CA server's TLS certificate under the new signer",
        ),
    );

  let closed = false;
  let authorityStarted = false;
  /**
   * One start attempt: the authority, the trust bundle file, the serving certificate. True when
   * the gRPC API serves; false (state.error says why) when it is worth trying again.
   */
  const attempt = async (): Promise<boolean> => {
    state.attempts++;
    try {
      if (!authorityStarted) {
        await authority.start();
        authorityStarted = true;
      }
      if (closed) return false;
      publishRoots();
      const serving = await issueServingCert(servingOpts);
      if (closed) return false;
      servingOpts.onRenew(serving);
      cleanups.push(keepServingCertFresh(servingOpts, serving));
    } catch (err) {
      if (isConfigError(err)) throw err;
      state.error = (err as Error).message;
      return false;
    }
    state.started = true;
    state.error = undefined;
    state.nextAttemptAt = undefined;
    grpcServer = g.server;
    await kube?.start(() => authority.trustBundle(), authority);
    for (const a of authenticators) {
      if (a instanceof JwtAuthenticator)
        await a
          .ready()
          .catch((err: Error) =>
            log.warn({ err: err.message }, "JWT keys not loaded yet; will retry on use"),
          );
    }
    if (authenticators.length === 0)
      log.warn(
        "no caller authentication is configured: every CreateCertificate will be refused (configure authentication.jwt or localIssuer)",
      );
    log.info(
      {
        grpc: `${config.listen.grpc.replace(/:\d+$/, "")}:${g.port}`,
        http: `${config.listen.http.replace(/:\d+$/, "")}:${h.port}`,
        authority: authority.kind,
        trustDomain: config.trustDomain,
        ...(state.attempts > 1 ? { attempts: state.attempts } : {}),
      },
      "meshvault CA server ready",
    );
    return true;
  };

  let retryTimer: NodeJS.Timeout | undefined;
  let resolveStarted!: () => void;
  let rejectStarted!: (err: Error) => void;
  const started = new Promise<void>((res, rej) => {
    resolveStarted = res;
    rejectStarted = rej;
  });
  started.catch(() => undefined); // observed through the handle; an unobserved rejection must not crash
  const retryLater = (): void => {
    const wait = backoffDelay(state.attempts, START_BACKOFF);
    state.nextAttemptAt = new Date(Date.now() + wait);
    log.warn(
      { authority: authority.kind, attempt: state.attempts, retryInMs: wait, reason: state.error },
      "the authority cannot start; serving not ready and retrying",
    );
    retryTimer = setTimeout(() => {
      if (closed) return;
      attempt().then(
        (ok) => (ok ? resolveStarted() : closed || retryLater()),
        (err: Error) => {
          // A configuration error found only now, or the serving certificate failing: say so and stop trying.
          log.error({ err: err.message }, "the CA server cannot start");
          state.error = err.message;
          rejectStarted(err);
        },
      );
    }, wait);
  };
  if (await attempt()) resolveStarted();
  else retryLater();
  cleanups.push(() => {
    closed = true;
    clearTimeout(retryTimer);
  });

  return {
    get grpcPort() {
      return g.port;
    },
    httpPort: h.port,
    authority,
    metrics,
    log,
    rootCertFile,
    rootsPem: () => authority.trustBundle().join(""),
    kubernetes: kube,
    issuance: pool,
    rotation: rotating ? () => rotating.view() : undefined,
    started,
    readiness,
    close: cleanup,
  };
}

/** Reads the trust bundle a running server wrote (for clients in the same data dir). */
export function readRootCertFile(path: string): string {
  return readFileSync(path, "utf8");
}
