// `meshvault agent` as a library: one or many identities, each with its own
// token file, renewal loop and outputs (Envoy SDS socket, files, hook), plus an
// optional status port. The sidecar is the one-identity case of the node agent.
import { createServer, type Server } from "node:http";
import path from "node:path";
import { createCaClient, type CaClient } from "./ca-client.js";
import { expectedSpiffeId, identityName, type AgentConfig, type IdentityConfig } from "./config.js";
import { runHook, writeCredentialFiles } from "./file-output.js";
import { createAgentMetrics, type AgentMetrics } from "./metrics.js";
import { silentLogger, type Logger } from "../log/logger.js";
import { createLimiter } from "./semaphore.js";
import { startSdsServer, type SdsServer } from "./sds/index.js";
import { WorkloadIdentity, type IdentityStatus } from "./workload.js";

export interface StartAgentOptions {
  /** A real pino logger: components get children of it (`log.child({ component })`). */
  logger?: Logger;
  /** Use this CA client instead of creating one from config.ca (tests, benchmarks). */
  caClient?: CaClient;
  /** Collect Node process metrics too. Default false (several agents may share a process). */
  processMetrics?: boolean;
  /** Do not wait for the first certificates before resolving. Default false: wait up to readyTimeoutMs. */
  waitForCertificates?: boolean;
}

export interface ManagedIdentity {
  config: IdentityConfig;
  identity: WorkloadIdentity;
  sds?: SdsServer;
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
  ready: boolean;
  identities: IdentityStatus[];
}

export async function startAgent(config: AgentConfig, opts: StartAgentOptions = {}): Promise<RunningAgent> {
  const logger = opts.logger ?? silentLogger();
  const ownsClient = !opts.caClient;
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
  const limiter = createLimiter(config.maxConcurrentRequests);
  const identities = new Map<string, ManagedIdentity>();
  const metrics = createAgentMetrics(
    () => [...identities.values()].map((m) => m.identity),
    opts.processMetrics ?? false,
  );

  const closeAll = async (): Promise<void> => {
    for (const m of identities.values()) m.identity.stop();
    await Promise.all([...identities.values()].map((m) => m.sds?.close()));
    if (ownsClient) ca.close();
  };

  try {
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
        logger,
        onFailure: () => metrics.failures.inc({ identity: name }),
        onIssued: async (secrets, info) => {
          metrics.issued.inc({ identity: name, via: info.via });
          if (outDir) await writeCredentialFiles(outDir, secrets);
          if (ic.exec) {
            const r = await runHook(ic.exec, {
              MESHVAULT_CERT_DIR: outDir ?? "",
              MESHVAULT_SPIFFE_ID: info.spiffeId,
              MESHVAULT_IDENTITY: name,
            });
            if (r.code !== 0)
              logger.warn(
                { identity: name, command: ic.exec, code: r.code, signal: r.signal },
                "post-rotation command failed",
              );
          }
        },
      });
      const managed: ManagedIdentity = { config: ic, identity };
      identities.set(name, managed);
      if (ic.sdsSocket)
        managed.sds = await startSdsServer({
          socketPath: ic.sdsSocket,
          source: identity.source,
          logger: logger.child({ component: "sds", identity: name }),
        });
    }
  } catch (err) {
    await closeAll();
    throw err;
  }

  for (const m of identities.values()) m.identity.start();

  const status = (): AgentStatus => {
    const now = new Date();
    const list = [...identities.values()].map((m) => m.identity.status(now));
    return { ready: list.every((s) => s.state !== "pending" && s.state !== "expired"), identities: list };
  };

  let statusServer: Server | undefined;
  let statusPort: number | undefined;
  if (config.statusListen) {
    // Load prom-client now rather than on the first scrape: a status port means it will be read.
    void metrics.registry;
    const s = await startStatusServer(config.statusListen, status, metrics);
    statusServer = s.server;
    statusPort = s.port;
  }

  const agent: RunningAgent = {
    identities,
    metrics,
    ...(statusPort !== undefined ? { statusPort } : {}),
    ready: () => Promise.all([...identities.values()].map((m) => m.identity.ready())).then(() => undefined),
    status,
    rotateAll: () =>
      Promise.all([...identities.values()].map((m) => m.identity.rotateNow())).then(() => undefined),
    close: async () => {
      await closeAll();
      await new Promise<void>((r) => (statusServer ? statusServer.close(() => r()) : r()));
    },
  };
  return agent;
}

async function startStatusServer(
  address: string,
  status: () => AgentStatus,
  metrics: AgentMetrics,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const p = (req.url ?? "/").split("?")[0];
    const send = (code: number, body: string, type = "text/plain; charset=utf-8"): void => {
      res.writeHead(code, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (p === "/healthz" || p === "/readyz") {
      const s = status();
      return send(
        s.ready ? 200 : 503,
        s.ready ? "ok\n" : "not ready: some identities hold no valid certificate\n",
      );
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
    send(404, "not found: try /healthz, /_status or /metrics\n");
  });
  const i = address.lastIndexOf(":");
  const host = address.slice(0, i).replace(/^\[|\]$/g, "") || "0.0.0.0";
  const port = Number(address.slice(i + 1));
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e) =>
      reject(new Error(`cannot listen on ${address} for the agent status port: ${e.message}`)),
    );
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  return { server, port: typeof addr === "object" && addr ? addr.port : port };
}
