// Wires a configured CA server: authority, authenticators, TLS gRPC API, HTTP side port,
// trust bundle file. Returns handles so tests, the demo and benchmarks can run it in-process.
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { ServerConfig } from "../config/schema.js";
import { createLogger, type Logger } from "../log/logger.js";
import type { Authority, Readiness } from "../authority/authority.js";
import type { BackoffPolicy } from "../timing/backoff.js";
import { FailureStreak } from "../timing/failure-streak.js";
import { ConfigError } from "../config/load.js";
import { abortable } from "../timing/clock.js";
import { CloserStack } from "../lifecycle/closer-stack.js";
import { joinHostPort, splitHostPort } from "../net/listen.js";
import { lockDir, DirLockedError } from "../fs/dir-lock.js";
import { makeDirSync } from "../fs/make-dir.js";
import { VaultConfigError } from "../vault/errors.js";
import { vaultConnectionFromConfig } from "../config/vault-schema.js";
import { createAuthority } from "../authority/factory.js";
import type { Authenticator, CallerCredentials } from "../identity/authenticator.js";
import { authenticateCaller } from "../identity/chain-of-authenticators.js";
import { ClientCertAuthenticator } from "../identity/client-cert.js";
import { JwtAuthenticator } from "../identity/jwt.js";
import { kubernetesIntegration, type KubernetesIntegration } from "../kube/server-integration.js";
import { ensureLocalIssuer, localIssuerName } from "../identity/local-issuer.js";
import { parseCertificates } from "../pki/certificate.js";
import { startGrpcCa } from "./grpc-ca.js";
import { startH2Ca } from "./grpc-h2-ca.js";
import { ReloadableServerCredentials } from "./server-credentials.js";
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
  /**
   * Settles once the first start attempt is over: resolves whether or not the authority could
   * start (then see `readiness()`), rejects like `started` for a configuration error. For
   * in-process callers (tests, the demo) that want the outcome of the first try.
   */
  firstAttempt: Promise<void>;
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
  /** How long close() lets gRPC calls and HTTP requests in flight finish (default SHUTDOWN_GRACE_MS). */
  shutdownGraceMs?: number;
  /**
   * The addresses of a listen host name, for the node-http2 gRPC server and the HTTP port
   * (default the system resolver; grpc-js resolves on its own). Tests name both loopbacks.
   */
  resolveHost?: (host: string) => Promise<string[]>;
}

/**
 * How long close() lets calls in flight on the gRPC API and the HTTP port finish before it
 * closes their connections: a third of the CLI's 15 s shutdown deadline (src/cli/shutdown.ts),
 * so a peer that never ends its request still leaves time for the closers after the listeners
 * (the authority's Vault token and leases, the issuance workers, the data directory lock).
 */
export const SHUTDOWN_GRACE_MS = 5000;

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
    start: (signal) => authority.start(signal),
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
  /** When the attempt now in flight (or the last one) began. */
  attemptStartedAt: Date | undefined;
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
 * Starts the server and returns once its ports are bound (and the data directory locked),
 * before the authority has started: no Vault request is waited for here, so a Vault that
 * accepts connections and never answers cannot hold up the caller (or a signal handler
 * installed after this returns). The authority starts in the background; until it serves,
 * /readyz, /_status, the log and `meshvault_authority_ready` say why (naming Vault while a
 * Vault-backed authority is waiting for it), and failed attempts are retried with backoff.
 * `started` resolves once the gRPC API serves. What no retry fixes (ConfigError,
 * VaultConfigError) closes the server and rejects `started`. close() cancels the start
 * attempt in flight (every Vault request takes its signal) and runs the server's one closer
 * stack. Rejects only for an unusable data directory and ports that cannot be bound.
 */
export async function startCaServer(config: ServerConfig, opts: StartOptions = {}): Promise<CaServerHandle> {
  const log = opts.log ?? createLogger({ level: config.log.level, format: config.log.format });
  const { dataDir, release } = claimDataDir(config.dataDir);
  const closers = new CloserStack((err) =>
    log.warn({ err: (err as Error).message }, "a part of the CA server failed to close"),
  );
  closers.defer(release);
  return closers.unlessStartFails(() => startLocked(config, opts, log, dataDir, closers));
}

async function startLocked(
  config: ServerConfig,
  opts: StartOptions,
  log: Logger,
  dataDir: string,
  closers: CloserStack,
): Promise<CaServerHandle> {
  const metrics = createCaMetrics(opts.defaultMetrics ?? true);
  const shutdownGraceMs = opts.shutdownGraceMs ?? SHUTDOWN_GRACE_MS;
  const pool = issuancePoolFor(config.workers, log);
  if (pool) closers.defer(() => pool.close());
  const base =
    opts.authority ??
    createAuthority(config.authority, {
      trustDomain: config.trustDomain,
      dataDir,
      log,
      vault: config.vault,
      leafSigner: pool?.signLeaf,
    });
  // Closed by whoever holds it last: the rotation wrapper closes its base, and a wrapper that
  // cannot be built (a bad rotation.state) must not leave the base's Vault client open.
  let owned: Authority = base;
  closers.defer(() => owned.close());
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
  owned = outer;
  // Backends that reload signing material report it; failures are counted and alerting can use
  // them. Through the rotation wrapper: it forwards the reloads of whichever signer it holds.
  outer.onReload?.((e) => metrics.caReloads.inc({ result: e.ok ? "ok" : "refused" }));
  const tracked = rememberIntermediates(outer);
  const authority = tracked.authority;
  const rootCertFile = resolve(config.rootCertFile ?? join(dataDir, "root-cert.pem"));

  const state: StartState = {
    started: false,
    attempts: 0,
    error: undefined,
    nextAttemptAt: undefined,
    attemptStartedAt: undefined,
  };
  // Named while a Vault-backed authority waits for its first answer (a Vault that accepts
  // connections and never answers would otherwise look like a slow start).
  const vaultAddress = config.authority.type.startsWith("vault-")
    ? vaultConnectionFromConfig(config.vault).address
    : undefined;
  let grpcServing = false;
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
          : `the ${authority.kind} authority is starting` +
            (vaultAddress
              ? `: waiting for Vault at ${vaultAddress} to answer` +
                (state.attemptStartedAt ? ` (since ${state.attemptStartedAt.toISOString()})` : "")
              : ""),
      };
    }
    if (!grpcServing) return { ready: false, reason: "gRPC listener not started" };
    return authority.ready();
  };
  metrics.readiness = () => ({ kind: authority.kind, readiness: readiness() });

  // Held from the start; TLS handshakes fail until the authority has issued the serving certificate.
  const credentials = new ReloadableServerCredentials();
  const kube = config.kubernetes
    ? kubernetesIntegration(config.kubernetes, { trustDomain: config.trustDomain, log })
    : undefined;
  closers.defer(async () => kube?.close());
  // Filled once the ports are bound (the local issuer writes its keys into the data directory).
  const authenticators: Authenticator[] = [];
  const policy: CaPolicy = {
    trustDomain: config.trustDomain,
    defaultTtlSeconds: config.certificates.defaultTtl,
    maxTtlSeconds: config.certificates.maxTtl,
    allowCommonName: config.certificates.allowCommonName,
    trustedNodeAccounts: new Set(config.authentication.trustedNodeAccounts),
  };
  const caApi = {
    deps: {
      authority,
      policy,
      authenticate: (creds: CallerCredentials) => authenticateCaller(authenticators, creds),
    },
    credentials,
    address: config.listen.grpc,
    log,
    metrics,
    shutdownGraceMs,
    ...(opts.resolveHost ? { resolveHost: opts.resolveHost } : {}),
  };
  // config.grpcServer: the lean node:http2 server, or grpc-js (the library, its oracle).
  const g = config.grpcServer === "node-http2" ? await startH2Ca(caApi) : await startGrpcCa(caApi);
  /** Said when the grace period ended with a listener's requests still open. */
  const forcedClose = (what: string) => (r: { forced: boolean }) => {
    if (r.forced)
      log.warn(
        { graceMs: shutdownGraceMs },
        `${what} still had requests open after the shutdown grace period (a peer did not finish its request); closed their connections`,
      );
  };
  let grpcClosed: Promise<void> | undefined;
  const closeGrpc = (): Promise<void> => (grpcClosed ??= g.shutdown().then(forcedClose("the CA gRPC API")));
  closers.defer(closeGrpc);
  const h = await startHttp({
    shutdownGraceMs,
    log,
    ...(opts.resolveHost ? { resolveHost: opts.resolveHost } : {}),
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
        grpc: { port: g.port, serving: grpcServing },
        servingCertificate: servingNotAfter ? { notAfter: servingNotAfter.toISOString() } : null,
        rootCertFile,
        roots: authority.trustBundle().length,
        ...(rotating ? { rootRotation: rotating.view() } : {}),
      };
    },
  });
  // Both listeners drain at once, under one grace period (the gRPC closer then finds it done).
  closers.defer(async () => {
    await Promise.all([h.close().then(forcedClose("the HTTP port")), closeGrpc()]);
  });
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
  closers.defer(() => clearInterval(rootsTimer));
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

  // close() aborts this first (deferred last): the start attempt in flight and every Vault
  // request it makes stop at once instead of waiting out Vault's request timeout.
  const stopping = new AbortController();
  const closed = (): boolean => stopping.signal.aborted;
  let authorityStarted = false;
  /**
   * One start attempt: the authority, the trust bundle file, the serving certificate. True when
   * the gRPC API serves; false (state.error says why) when it is worth trying again.
   */
  const attempt = async (): Promise<boolean> => {
    state.attempts++;
    state.attemptStartedAt = new Date();
    const signal = stopping.signal;
    try {
      if (!authorityStarted) {
        // abortable: whatever the authority cannot cancel itself (a shared login) is not waited for.
        await abortable(authority.start(signal), signal);
        authorityStarted = true;
      }
      if (closed()) return false;
      publishRoots();
      const serving = await abortable(issueServingCert(servingOpts), signal);
      if (closed()) return false;
      servingOpts.onRenew(serving);
      closers.defer(keepServingCertFresh(servingOpts, serving));
    } catch (err) {
      if (closed()) return false;
      if (isConfigError(err)) throw err;
      state.error = (err as Error).message;
      return false;
    }
    state.started = true;
    state.error = undefined;
    state.nextAttemptAt = undefined;
    grpcServing = true;
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
        ...where,
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
  let settleFirst: ((err?: Error) => void) | undefined;
  const firstAttempt = new Promise<void>((res, rej) => {
    settleFirst = (err) => (err ? rej(err) : res());
  });
  firstAttempt.catch(() => undefined);
  const firstOver = (err?: Error): void => {
    settleFirst?.(err);
    settleFirst = undefined;
  };
  const startLog = log.child({ component: "supervisor" });
  // The same refusal every few seconds is one warning, not one per attempt.
  const startFailures = new FailureStreak(START_BACKOFF);
  const retryLater = (): void => {
    const { delayMs: wait, repeated } = startFailures.fail(state.error ?? "");
    state.nextAttemptAt = new Date(Date.now() + wait);
    const fields = {
      authority: authority.kind,
      attempt: state.attempts,
      retryInMs: wait,
      reason: state.error,
    };
    const msg = "the authority cannot start; serving not ready and retrying";
    if (!repeated) startLog.warn(fields, msg);
    else startLog.debug(fields, msg);
    retryTimer = setTimeout(run, wait);
  };
  const run = (): void => {
    if (closed()) return firstOver();
    attempt().then(
      (ok) => {
        if (ok) resolveStarted();
        else if (!closed()) retryLater();
        firstOver();
      },
      (err: Error) => {
        // What no retry fixes (configuration): say so, close everything, and stop trying.
        startLog.error({ authority: authority.kind, err: err.message }, "the CA server cannot start");
        state.error = err.message;
        void closers.close().finally(() => {
          rejectStarted(err);
          firstOver(err);
        });
      },
    );
  };
  closers.defer(() => {
    stopping.abort(new Error("the CA server is closing"));
    clearTimeout(retryTimer);
  });
  // The configured hosts with the bound ports (port 0 asks for any free one).
  const where = {
    grpc: joinHostPort(splitHostPort(config.listen.grpc).host, g.port),
    http: joinHostPort(splitHostPort(config.listen.http).host, h.port),
  };
  log.info(
    {
      ...where,
      grpcServer: config.grpcServer,
      authority: authority.kind,
      ...(vaultAddress ? { vault: vaultAddress } : {}),
    },
    "meshvault CA server listening; starting the authority (not ready until it serves)",
  );
  run();

  let stopped: Promise<void> | undefined;
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
    firstAttempt,
    readiness,
    close: () => (stopped ??= closers.close().then(() => log.info("meshvault CA server stopped"))),
  };
}

/** Reads the trust bundle a running server wrote (for clients in the same data dir). */
export function readRootCertFile(path: string): string {
  return readFileSync(path, "utf8");
}
