// Test harness: Istio's REAL pilot-agent (istio-agent), built from the Go module proxy
// by scripts/ensure-istio-agent.sh (wrapper module in test/istio-peers/agent/), run on
// loopback against a meshvault CA with no istiod and no Kubernetes.
//
// Two modes, because Istio's own source makes them differ (pkg/istio-agent/agent.go,
// initSdsServer):
//   - "sidecar": the agent starts its SDS server on
//     ./var/run/secrets/workload-spiffe-uds/socket, which also warms the workload
//     certificate and root at startup (security/pkg/nodeagent/sds/sdsservice.go,
//     newSDSService, retrying with backoff) and serves them from its cache when an SDS
//     client (normally Envoy) asks. The Envoy process it supervises is a stand-in shell
//     script (no Envoy binary is reachable here); our SDS test client plays Envoy.
//   - "proxyless" (DISABLE_ENVOY=true): NO SDS server is started at all; the agent
//     fetches the workload certificate and root eagerly (getWorkloadCerts, retrying
//     forever) and writes them to OUTPUT_CERTS, as it does for proxyless gRPC.
// In both modes the xDS proxy listens on ./etc/istio/proxy/XDS but dials istiod only
// when a downstream connects to it, so without an istiod (discoveryAddress) the unreachable
// default is harmless; with one, the test plays Envoy on that socket.
//
//   const agent = await startIstioAgent({ mode: "sidecar", caAddress, caRootPem, token, ... });
//   try { ... } finally { await agent.stop(); }
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { startPeerProcess } from "./proc.js";
import { Leftovers } from "./leftovers.js";
import { SECRET_TYPE_URL, SdsTestClient, secretsByName, type WireSecret } from "./sds-client.js";
import { freePort } from "./ports.js";
import { delay, waitFor } from "./wait.js";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileP = promisify(execFile);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** Paths the agent uses relative to its working directory (Istio's defaults). */
export const AGENT_PATHS = {
  token: "var/run/secrets/tokens/istio-token",
  sdsSocket: "var/run/secrets/workload-spiffe-uds/socket",
  xdsSocket: "etc/istio/proxy/XDS",
  envoyBootstrap: "etc/istio/proxy/envoy-rev.json",
  grpcBootstrap: "etc/istio/proxy/grpc-bootstrap.json",
} as const;

export interface IstioAgentBuild {
  dir: string;
  binary: string;
  /** Istio's Envoy bootstrap template from the same module. */
  bootstrapTemplate: string;
}

/** The directory holding pilot-agent, building it on first use. */
export async function istioAgentBuild(): Promise<IstioAgentBuild> {
  let dir = process.env.MESHVAULT_ISTIO_AGENT_DIR;
  if (!dir) {
    const script = join(repoRoot, "scripts", "ensure-istio-agent.sh");
    try {
      const { stdout } = await execFileP("bash", [script, "--print-dir"], {
        cwd: repoRoot,
        maxBuffer: 64 * 1024 * 1024,
      });
      dir = stdout.trim().split("\n").pop();
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`building pilot-agent failed: ${e.message}\n${e.stderr ?? ""}`, { cause: err });
    }
    if (!dir) throw new Error("ensure-istio-agent.sh printed no directory");
  }
  return {
    dir,
    binary: join(dir, "pilot-agent"),
    bootstrapTemplate: join(dir, "envoy_bootstrap_tmpl.json"),
  };
}

export interface IstioAgentOptions {
  mode: "sidecar" | "proxyless";
  /** host:port of the CA (CA_ADDR). TLS is used (any port but 15010). */
  caAddress: string;
  /** PEM that verifies the CA's serving certificate (a file for CA_ROOT_CA), and istiod's (XDS_ROOT_CA). */
  caRootPem: string;
  /** Projected-token content for ./var/run/secrets/tokens/istio-token; undefined: no file. */
  token: string | undefined;
  namespace: string;
  serviceAccount: string;
  trustDomain?: string;
  clusterId?: string;
  /** SECRET_TTL, a Go duration (default "24h", Istio's). */
  secretTtl?: string;
  /**
   * PROV_CERT: a certificate the agent presents to the CA as its TLS client certificate
   * (Istio's VM bootstrap/renewal path); written as key.pem + cert-chain.pem.
   */
  provCert?: { keyPem: string; certChainPem: string };
  /** More environment for the agent (e.g. ECC_SIGNATURE_ALGORITHM, CA_HEADER_*). */
  env?: Record<string, string>;
  /**
   * istiod's XDS address (proxyConfig.discoveryAddress), dialled over TLS when a downstream
   * (Envoy) connects to the agent's XDS socket. Default: a closed loopback port, never dialled.
   */
  discoveryAddress?: string;
}

export interface IstioAgent {
  /** The agent's working directory (its "/"-relative paths live here). */
  cwd: string;
  /** grpc-js address of the agent's SDS socket ("unix:/abs/path"). */
  sdsAddress: string;
  sdsSocketPath: string;
  /** Where OUTPUT_CERTS writes key.pem, cert-chain.pem, root-cert.pem. */
  outputCertsDir: string;
  logPath: string;
  /** The agent's status server (health, /stats/prometheus). */
  statusPort: number;
  pid: number;
  /** The agent's output so far. */
  log(): Promise<string>;
  /** Resolves with the first log line matching `re`; rejects on timeout or agent exit. */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves once `path` (relative to cwd, or absolute) exists. */
  waitForFile(path: string, timeoutMs?: number): Promise<void>;
  /** The Envoy bootstrap the agent wrote (etc/istio/proxy/envoy-rev.json), once complete JSON. */
  envoyBootstrap(timeoutMs?: number): Promise<string>;
  /** Exit code once the agent exited, else undefined. */
  exitCode(): number | null | undefined;
  /** SIGTERM (then SIGKILL), removes the working directory. Idempotent. */
  stop(): Promise<void>;
}

const leftovers = new Leftovers("MESHVAULT_ISTIO_KEEP");

// Stands in for the Envoy process pilot-agent supervises in sidecar mode: the agent
// exits when "Envoy" exits, so this must stay up, and must not outlive the agent.
const ENVOY_STAND_IN = `#!/bin/sh
# Stand-in for Envoy (pilot-agent runs proxyConfig.binaryPath with Envoy's flags).
# It does nothing: the test's SDS client plays Envoy on the agent's SDS socket.
while kill -0 "$PPID" 2>/dev/null; do sleep 1; done
`;

export async function startIstioAgent(o: IstioAgentOptions): Promise<IstioAgent> {
  const build = await istioAgentBuild();
  const cwd = await mkdtemp(join(tmpdir(), "meshvault-istio-agent-"));
  leftovers.dir(cwd);
  const td = o.trustDomain ?? "cluster.local";
  const caRootFile = join(cwd, "meshvault-ca-root.pem");
  await writeFile(caRootFile, o.caRootPem);
  if (o.token !== undefined) {
    const tokenPath = join(cwd, AGENT_PATHS.token);
    await mkdir(dirname(tokenPath), { recursive: true });
    await writeFile(tokenPath, o.token, { mode: 0o600 });
  }
  let provCertDir: string | undefined;
  if (o.provCert) {
    // pkg/istio-agent/agent.go getKeyCertInner: <PROV_CERT>/key.pem, <PROV_CERT>/cert-chain.pem.
    provCertDir = join(cwd, "prov-cert");
    await mkdir(provCertDir, { recursive: true });
    await writeFile(join(provCertDir, "key.pem"), o.provCert.keyPem, { mode: 0o600 });
    await writeFile(join(provCertDir, "cert-chain.pem"), o.provCert.certChainPem);
  }
  // The agent writes into OUTPUT_CERTS but does not create it (in a pod it is an
  // emptyDir mount): without it every write fails with ENOENT.
  const outputCertsDir = join(cwd, "output-certs");
  await mkdir(outputCertsDir, { recursive: true });

  // ProxyConfig overlay (the PROXY_CONFIG env, as the injector sets it). statusPort:
  // Istio validates it as 1..65535 (0 is refused) and the default 15020 would collide
  // between parallel runs, so a free one. discoveryAddress: istiod when the test runs one,
  // else a closed loopback port, never dialled (see above) but never a DNS name either.
  // No drain wait on SIGTERM.
  const statusPort = await freePort();
  const proxyConfig: Record<string, unknown> = {
    discoveryAddress: o.discoveryAddress ?? "127.0.0.1:1",
    statusPort,
    terminationDrainDuration: "0s",
    concurrency: 1,
  };
  if (o.mode === "sidecar") {
    const standIn = join(cwd, "envoy-stand-in.sh");
    await writeFile(standIn, ENVOY_STAND_IN);
    await chmod(standIn, 0o755);
    proxyConfig.binaryPath = standIn;
    proxyConfig.proxyBootstrapTemplatePath = build.bootstrapTemplate;
  }

  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: cwd,
    // Skip cloud metadata probes (GCP/AWS/Azure), which would otherwise delay startup.
    CLOUD_PLATFORM: "none",
    PROXY_CONFIG: JSON.stringify(proxyConfig),
    CA_ADDR: o.caAddress,
    CA_PROVIDER: "Citadel", // Istio's CA API (the default, stated for the reader)
    CA_ROOT_CA: caRootFile,
    XDS_ROOT_CA: caRootFile,
    PILOT_CERT_PROVIDER: "istiod",
    JWT_POLICY: "third-party-jwt",
    TRUST_DOMAIN: td,
    ISTIO_META_CLUSTER_ID: o.clusterId ?? "Kubernetes",
    POD_NAME: `${o.serviceAccount}-0`,
    POD_NAMESPACE: o.namespace,
    SERVICE_ACCOUNT: o.serviceAccount,
    INSTANCE_IP: "127.0.0.1",
    OUTPUT_CERTS: outputCertsDir,
    SECRET_TTL: o.secretTtl ?? "24h",
    ...(o.mode === "proxyless" ? { DISABLE_ENVOY: "true" } : {}),
    ...(provCertDir ? { PROV_CERT: provCertDir } : {}),
    ...o.env,
  };

  const logPath = join(cwd, "pilot-agent.log");
  // `proxy sidecar` in both modes: Istio's proxyless injection template runs the same
  // command and switches Envoy off with DISABLE_ENVOY.
  const proc = startPeerProcess(build.binary, ["proxy", "sidecar"], logPath, leftovers, { cwd, env });

  const readLog = (): Promise<string> => readFile(logPath, "utf8").catch(() => "");
  const tail = async (): Promise<string> => (await readLog()).split("\n").slice(-40).join("\n");
  const abs = (p: string): string => resolve(cwd, p);
  const sdsSocketPath = abs(AGENT_PATHS.sdsSocket);

  let stopped = false;
  const agent: IstioAgent = {
    cwd,
    sdsAddress: `unix:${sdsSocketPath}`,
    sdsSocketPath,
    outputCertsDir,
    logPath,
    statusPort,
    pid: proc.child.pid ?? -1,
    log: readLog,
    exitCode: proc.exitCode,
    async waitForLog(re, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const line = (await readLog()).split("\n").find((l) => re.test(l));
        if (line !== undefined) return line;
        if (proc.exitCode() !== undefined)
          throw new Error(`pilot-agent exited (${proc.exitCode()}) before logging ${re}:\n${await tail()}`);
        if (Date.now() > deadline)
          throw new Error(`pilot-agent did not log ${re} within ${timeoutMs} ms:\n${await tail()}`);
        await delay(100);
      }
    },
    async waitForFile(path, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (!existsSync(abs(path))) {
        if (proc.exitCode() !== undefined)
          throw new Error(
            `pilot-agent exited (${proc.exitCode()}) before creating ${path}:\n${await tail()}`,
          );
        if (Date.now() > deadline)
          throw new Error(`pilot-agent did not create ${path} within ${timeoutMs} ms:\n${await tail()}`);
        await delay(100);
      }
    },
    async envoyBootstrap(timeoutMs = 20_000) {
      await agent.waitForFile(AGENT_PATHS.envoyBootstrap, timeoutMs);
      // The agent may still be writing the file when it appears: wait for complete JSON.
      return waitFor(
        "a complete Envoy bootstrap",
        async () => {
          const text = await readFile(abs(AGENT_PATHS.envoyBootstrap), "utf8");
          try {
            JSON.parse(text);
            return text;
          } catch {
            return undefined;
          }
        },
        timeoutMs,
      );
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await proc.stop(5_000);
      if (!process.env.MESHVAULT_ISTIO_KEEP) await rm(cwd, { recursive: true, force: true });
      leftovers.forgetDir(cwd);
    },
  };
  return agent;
}

/** One SDS stream per resource, as Envoy opens them; returns the first response's secret. */
export async function sdsFetch(agent: IstioAgent, resource: string, timeoutMs = 15_000): Promise<WireSecret> {
  const client = new SdsTestClient(agent.sdsAddress);
  const stream = client.streamSecrets();
  try {
    stream.send({
      node: { id: `sidecar~127.0.0.1~${resource}.test~test.svc.cluster.local`, cluster: "test" },
      typeUrl: SECRET_TYPE_URL,
      resourceNames: [resource],
    });
    const resp = await stream.next(timeoutMs);
    assert.equal(resp.typeUrl, SECRET_TYPE_URL);
    // istio-agent's version_info is "<RFC3339 time>/<counter>", its nonce a UUID.
    assert.match(resp.versionInfo, /^\d{4}-\d\d-\d\dT[^/]+\/\d+$/);
    assert.match(resp.nonce, /^[0-9a-f-]{36}$/);
    const secret = secretsByName(resp).get(resource);
    assert.ok(secret, `SDS response has no ${resource} secret`);
    stream.ack(resp, [resource]);
    return secret;
  } finally {
    stream.cancel();
    client.close();
  }
}
