// `meshvault agent` as a library: one or many identities, each with its own
// token file, renewal loop and outputs (Envoy SDS socket, files, hook), plus an
// optional status port. The sidecar is the one-identity case of the node agent.
import { existsSync } from "node:fs";
import { createServer, type RequestListener } from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { createCaClient, type CaClient } from "./ca-client.js";
import { expectedSpiffeId, identityName, type AgentConfig, type IdentityConfig } from "./config.js";
import { runHook, writeCredentialFiles } from "./file-output.js";
import { createAgentMetrics, type AgentMetrics } from "./metrics.js";
import { silentLogger, type Logger } from "../log/logger.js";
import { createLimiter } from "./semaphore.js";
import { startSdsServer, type SdsServer } from "./sds/index.js";
import { OutputChain, RetryingOutput, type OutputStatus } from "./outputs.js";
import { RootFileState } from "./trust-bundle.js";
import { WorkloadIdentity, type IdentityStatus } from "./workload.js";
import { closeServers, listenOnEveryAddress } from "../net/listen.js";
import { CloserStack } from "../lifecycle/closer-stack.js";

export interface StartAgentOptions {
  /** A real pino logger: components get children of it (`log.child({ component })`). */
  logger?: Logger;
  /** Use this CA client instead of creating one from config.ca (tests, benchmarks). */
  caClient?: CaClient;
  /** Collect Node process metrics too. Default false (several agents may share a process). */
  processMetrics?: boolean;
  /** How often ca.rootCertFile is checked for a new trust bundle (root rotation). Default 5 s. */
  rootsPollMs?: number;
  /** The addresses of a statusListen host name; default the system resolver. */
  resolveHost?: (host: string) => Promise<string[]>;
}

export interface ManagedIdentity {
  config: IdentityConfig;
  identity: WorkloadIdentity;
  sds?: SdsServer;
  /** Files and hook, each retrying until it holds the current certificate. */
  outputs: RetryingOutput[];
}

export interface RunningAgent {
  identities: Map<string, ManagedIdentity>;
  metrics: AgentMetrics;
  /** Port of the status server, when config.statusListen is set. */
  statusPort?: number;
  /** Resolves when every identity holds a certificate. */
  ready(): Promise<void>;
  status(): AgentStatus;
  /** Renews every identity now. */
  rotateAll(): Promise<void>;
  close(): Promise<void>;
}

export interface AgentStatus {
  /** Every identity holds a valid certificate and every output and SDS socket serves it. */
  ready: boolean;
  /** Why not, one line per identity or output that is not there yet (absent when ready). */
  reasons?: string[];
  identities: (IdentityStatus & { outputs: OutputStatus[] })[];
}

export async function startAgent(config: AgentConfig, opts: StartAgentOptions = {}): Promise<RunningAgent> {
  const logger = opts.logger ?? silentLogger();
  // Everything started is stopped last-first, by close() and as well when a later start step
  // fails (a status port already taken): no SDS socket file or renewal loop outlives the error.
  const closers = new CloserStack((err) =>
    logger
      .child({ component: "agent" })
      .warn({ err: (err as Error).message }, "a part of the agent failed to close"),
  );
  return closers.unlessStartFails(() => startParts(config, opts, logger, closers));
}

async function startParts(
  config: AgentConfig,
  opts: StartAgentOptions,
  logger: Logger,
  closers: CloserStack,
): Promise<RunningAgent> {
  const agentLog = logger.child({ component: "agent" });
  const ca =
    opts.caClient ??
    (await createCaClient({
      address: config.ca.address,
      rootCertFile: config.ca.rootCertFile,
      timeoutMs: config.ca.timeout * 1000,
      headers: config.ca.headers,
      ...(config.ca.serverName ? { serverName: config.ca.serverName } : {}),
      ...(config.ca.clusterId ? { clusterId: config.ca.clusterId } : {}),
    }));
  if (!opts.caClient) closers.defer(() => ca.close());
  const limiter = createLimiter(config.maxConcurrentRequests);
  const identities = new Map<string, ManagedIdentity>();
  const metrics = createAgentMetrics(
    () => [...identities.values()].map((m) => m.identity),
    opts.processMetrics ?? false,
  );

  // The mounted root file (istio-ca-root-cert in Kubernetes, rootCertFile next to a server)
  // changes during a root rotation: every identity publishes it without waiting for renewal.
  const rootFile = new RootFileState();
  const rootsTimer = setInterval(() => {
    void readFile(config.ca.rootCertFile, "utf8").then(
      (pem) => {
        if (rootFile.read(pem)) for (const m of identities.values()) m.identity.applyRootFile();
      },
      () => undefined,
    );
  }, opts.rootsPollMs ?? 5000);
  rootsTimer.unref();
  closers.defer(() => clearInterval(rootsTimer));
  // The sockets close together: each lets its streams finish under its own grace period.
  closers.defer(async () => {
    await Promise.all([...identities.values()].map((m) => m.sds?.close()));
  });

  for (const ic of config.identities) {
    const name = identityName(ic);
    const spiffeId = expectedSpiffeId(ic, config.trustDomain);
    const outDir = ic.outDir ? path.resolve(ic.outDir) : undefined;
    const identity: WorkloadIdentity = new WorkloadIdentity({
      name,
      ca,
      tokenFile: ic.tokenFile,
      ...(spiffeId ? { spiffeId } : {}),
      keyAlgorithm: config.keyAlgorithm,
      validitySeconds: config.certTtl,
      rotation: { graceRatio: config.graceRatio, graceJitter: config.graceJitter },
      backoff: { initialMs: config.backoff.initial * 1000, maxMs: config.backoff.max * 1000 },
      expiringRatio: config.expiringRatio,
      renewWithClientCert: config.renewWithClientCert,
      limiter,
      rootFile,
      logger: agentLog,
      onFailure: () => metrics.failures.inc({ identity: name }),
      // A new trust bundle goes down the same outputs as a new certificate, so the newer of
      // the two is what they end up holding, and the hook tells the workload to trust it.
      onRootsChanged: (secrets, info) => chain.publish(secrets, info),
      onIssued: async (secrets, info) => {
        metrics.issued.inc({ identity: name, via: info.via });
        await chain.publish(secrets, info);
      },
    });
    const outputs: RetryingOutput[] = [];
    // In order: the hook (a reload signal) runs after the files it announces.
    const chain = new OutputChain(outputs);
    const outputLog = { identity: name, logger: agentLog };
    const files = outDir
      ? new RetryingOutput("files", outDir, (secrets) => writeCredentialFiles(outDir, secrets), outputLog)
      : undefined;
    if (files) outputs.push(files);
    if (ic.exec) {
      const command = ic.exec;
      outputs.push(
        new RetryingOutput(
          "hook",
          command,
          async (_secrets, info) => {
            // The hook tells the workload to reload the files: pointless before they are written.
            if (files && files.status().state !== "current")
              throw new Error(`waiting for the certificate files in ${outDir} to be written`);
            const r = await runHook(command, {
              MESHVAULT_CERT_DIR: outDir ?? "",
              MESHVAULT_SPIFFE_ID: info.spiffeId,
              MESHVAULT_IDENTITY: name,
            });
            if (r.code !== 0)
              throw new Error(
                `post-rotation command ${JSON.stringify(command)} ${r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code}`}`,
              );
          },
          outputLog,
        ),
      );
    }
    const managed: ManagedIdentity = { config: ic, identity, outputs };
    identities.set(name, managed);
    if (ic.sdsSocket)
      managed.sds = await startSdsServer({
        socketPath: ic.sdsSocket,
        source: identity.source,
        logger: logger.child({ component: "sds", identity: name }),
      });
  }

  for (const m of identities.values()) m.identity.start();
  // Not awaited: a renewal in flight ends with the CA call's own deadline, which close() need not wait out.
  closers.defer(() => {
    for (const m of identities.values()) {
      void m.identity.stop();
      for (const o of m.outputs) o.stop();
    }
  });

  const status = (): AgentStatus => {
    const now = new Date();
    const reasons: string[] = [];
    const list = [...identities.values()].map((m) => {
      const s = m.identity.status(now);
      const outputs = m.outputs.map((o) => o.status());
      if (s.state === "pending" || s.state === "expired")
        reasons.push(
          `${s.name}: ${s.state === "pending" ? "no certificate yet" : `certificate expired at ${s.notAfter}`}` +
            (s.lastError ? ` (${s.lastError})` : ""),
        );
      for (const o of outputs)
        if (o.state !== "current" && s.serial !== undefined)
          reasons.push(
            `${s.name}: ${o.kind} output ${o.target} does not hold the current certificate` +
              (o.lastError ? `: ${o.lastError}` : "") +
              (o.nextAttemptAt ? `; retrying at ${o.nextAttemptAt}` : ""),
          );
      if (m.sds) {
        const serving = existsSync(m.sds.socketPath);
        outputs.push({
          kind: "sds",
          target: m.sds.socketPath,
          state: serving && s.serial !== undefined ? "current" : serving ? "pending" : "failed",
          ...(s.serial !== undefined ? { serial: s.serial } : {}),
          failures: 0,
          ...(serving
            ? {}
            : { lastError: "the socket file is gone: Envoy cannot connect; restart the agent" }),
        });
        if (!serving) reasons.push(`${s.name}: SDS socket ${m.sds.socketPath} is gone; restart the agent`);
      }
      return { ...s, outputs };
    });
    return { ready: reasons.length === 0, ...(reasons.length ? { reasons } : {}), identities: list };
  };

  let statusPort: number | undefined;
  if (config.statusListen) {
    // Load prom-client now rather than on the first scrape: a status port means it will be read.
    void metrics.registry;
    const bound = await listenOnEveryAddress({
      address: config.statusListen,
      what: "the agent status port (--status-listen, statusListen)",
      create: () => createServer(statusHandler(status, metrics)),
      log: agentLog,
      ...(opts.resolveHost ? { resolve: opts.resolveHost } : {}),
    });
    statusPort = bound.port;
    closers.defer(() => closeServers(bound.servers));
  }

  return {
    identities,
    metrics,
    ...(statusPort !== undefined ? { statusPort } : {}),
    ready: () => Promise.all([...identities.values()].map((m) => m.identity.ready())).then(() => undefined),
    status,
    rotateAll: () =>
      Promise.all([...identities.values()].map((m) => m.identity.rotateNow())).then(() => undefined),
    close: () => closers.close(),
  };
}

function statusHandler(status: () => AgentStatus, metrics: AgentMetrics): RequestListener {
  return (req, res) => {
    const p = (req.url ?? "/").split("?")[0];
    const send = (code: number, body: string, type = "text/plain; charset=utf-8"): void => {
      res.writeHead(code, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (p === "/healthz" || p === "/readyz") {
      // /healthz is kept as it was (ready or not) for existing probes; /readyz is the contract.
      const s = status();
      return send(s.ready ? 200 : 503, s.ready ? "ok\n" : `not ready: ${(s.reasons ?? []).join("; ")}\n`);
    }
    if (p === "/_status" || p === "/status") {
      const s = status();
      return send(s.ready ? 200 : 503, `${JSON.stringify(s, null, 2)}\n`, "application/json");
    }
    if (p === "/metrics" || p === "/_metrics") {
      metrics.registry.metrics().then(
        (t) => send(200, t, metrics.registry.contentType),
        (e: Error) => send(500, `metrics: ${e.message}\n`),
      );
      return;
    }
    send(404, "not found: try /healthz, /readyz, /_status or /metrics\n");
  };
}
