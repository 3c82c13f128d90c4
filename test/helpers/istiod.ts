// Test harness: Istio's REAL istiod (pilot-discovery), built from the Go module proxy by
// scripts/ensure-istiod.sh (wrapper module in test/istio-peers/istiod/, the same
// istio.io/istio version as pilot-agent), run as a local process against the suite's
// real kube-apiserver (test/helpers/kube.ts). No pod: what a pod would give istiod
// (mounts, env, ports) is laid out here, each with the reason found in Istio's source:
//
//   - cwd: a temp dir. istiod resolves its well-known paths relative to the working
//     directory ("./etc/cacerts" for ROOT_CA_DIR in pilot/pkg/bootstrap/istio_ca.go,
//     "./var/run/secrets/istiod/{tls,ca}/" in pkg/config/constants, "./etc/istio/config/
//     mesh" for --meshConfig); a pod has them at /, we have them under cwd.
//   - the Istio CRDs from the same module (manifests/charts/base/files/crd-all.gen.yaml),
//     applied first: istiod's config informers list and watch those kinds and /ready
//     waits for their caches to sync.
//
//   const istiod = await startIstiod({ kube, cacertsDir });
//   try { ... } finally { await istiod.stop(); }
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { parseAllDocuments } from "yaml";
import type { KubeEnv } from "./kube.js";
import { Leftovers } from "./leftovers.js";
import { startPeerProcess } from "./proc.js";
import { freePort } from "./ports.js";
import { delay } from "./wait.js";

const execFileP = promisify(execFile);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export interface IstiodBuild {
  dir: string;
  binary: string;
  /** Istio's CRDs from the same module. */
  crds: string;
  /** istio.io/istio module version (a pseudo-version: Istio publishes no semver module tags). */
  version: string;
}

/** The directory holding pilot-discovery, building it on first use. */
export async function istiodBuild(): Promise<IstiodBuild> {
  let dir = process.env.MESHVAULT_ISTIOD_DIR;
  if (!dir) {
    try {
      const { stdout } = await execFileP(
        "bash",
        [join(repoRoot, "scripts", "ensure-istiod.sh"), "--print-dir"],
        {
          cwd: repoRoot,
          maxBuffer: 64 * 1024 * 1024,
        },
      );
      dir = stdout.trim().split("\n").pop();
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`building istiod (pilot-discovery) failed: ${e.message}\n${e.stderr ?? ""}`, {
        cause: err,
      });
    }
    if (!dir) throw new Error("ensure-istiod.sh printed no directory");
  }
  // <cache>/istiod-<version>-<hash>
  const version = /^istiod-(.+)-[0-9a-f]{8}$/.exec(dir.split("/").pop() ?? "")?.[1] ?? "unknown";
  return { dir, binary: join(dir, "pilot-discovery"), crds: join(dir, "crd-all.gen.yaml"), version };
}

/** Applies Istio's CRDs (idempotent) and waits until the apiserver serves them (Established). */
export async function applyIstioCrds(kube: KubeEnv, crdsPath: string): Promise<string[]> {
  const docs = parseAllDocuments(await readFile(crdsPath, "utf8"))
    .map((d) => d.toJS() as { kind?: string; metadata?: { name?: string } } | null)
    .filter((d): d is { kind: string; metadata: { name: string } } => d?.kind === "CustomResourceDefinition");
  if (docs.length === 0) throw new Error(`${crdsPath}: no CustomResourceDefinition documents`);
  const base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
  for (const crd of docs) {
    const r = await kube.request("POST", base, crd, { expectOk: false });
    if (r.status !== 201 && r.status !== 409)
      throw new Error(`creating CRD ${crd.metadata.name}: ${r.status} ${JSON.stringify(r.body)}`);
  }
  const names = docs.map((d) => d.metadata.name);
  const deadline = Date.now() + 60_000;
  for (const name of names) {
    for (;;) {
      const r = await kube.request("GET", `${base}/${name}`);
      const conds = (r.body as { status?: { conditions?: { type: string; status: string }[] } }).status
        ?.conditions;
      if (conds?.some((c) => c.type === "Established" && c.status === "True")) break;
      if (Date.now() > deadline) throw new Error(`CRD ${name} not Established after 60 s`);
      await delay(100);
    }
  }
  return names;
}

export interface IstiodOptions {
  kube: KubeEnv;
  /**
   * istiod's plug-in CA directory (what the chart mounts from Secret `cacerts` at
   * /etc/cacerts; seed 003's memory-backed emptyDir). Passed as ROOT_CA_DIR. Without it
   * (and with the CA server on) istiod would make its own self-signed root.
   */
  cacertsDir?: string;
  /** ENABLE_CA_SERVER (default true). false: an external CA signs workloads (meshvault). */
  caServer?: boolean;
  /**
   * istiod's serving certificate as the chart mounts it when an external CA provides it:
   * Secret istiod-tls at ./var/run/secrets/istiod/tls/ and the ConfigMap
   * istio-ca-root-cert at ./var/run/secrets/istiod/ca/ (pkg/config/constants
   * DefaultPilotTLSCert/Key/CaCert; istiod then skips signing its own, see
   * initIstiodCerts in pilot/pkg/bootstrap/server.go, and watches the files).
   */
  servingCert?: { tlsCrt: string; tlsKey: string; rootCert: string };
  trustDomain?: string;
  /** More environment (e.g. DEFAULT_WORKLOAD_CERT_TTL). */
  env?: Record<string, string>;
}

export interface Istiod {
  cwd: string;
  /** ./etc/cacerts-style directory istiod reads (ROOT_CA_DIR), if given. */
  cacertsDir: string | undefined;
  /** Plain HTTP: /ready, /debug/*, /metrics, and plaintext gRPC (multiplexed). */
  httpPort: number;
  /** The secure gRPC port (15012 in a cluster): XDS and the CA API over TLS. */
  securePort: number;
  /**
   * What pilot-agent should dial: "localhost:<securePort>". pilot-agent verifies the
   * server name istiod.istio-system.svc for a "localhost" host (pilot/pkg/grpc/tls.go),
   * the name istiod's certificate carries, as it would in a cluster.
   */
  address: string;
  logPath: string;
  log(): Promise<string>;
  /** Resolves with the first log line at or after byte `from` matching `re`; rejects on timeout or exit. */
  waitForLog(re: RegExp, opts?: { from?: number; timeoutMs?: number }): Promise<string>;
  /** Current length of the log, to wait for lines logged after now. */
  logSize(): Promise<number>;
  /** GET http://127.0.0.1:<httpPort><path>, parsed as JSON. */
  debug(path: string): Promise<unknown>;
  exitCode(): number | null | undefined;
  /** SIGTERM (then SIGKILL) and removes cwd. Idempotent. */
  stop(): Promise<void>;
}

const leftovers = new Leftovers("MESHVAULT_ISTIOD_KEEP");

class PortRaceError extends Error {}

/** Applies the CRDs, then starts istiod on free loopback ports and waits for /ready. */
export async function startIstiod(o: IstiodOptions): Promise<Istiod> {
  const build = await istiodBuild();
  await applyIstioCrds(o.kube, build.crds);
  let last: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(build, o);
    } catch (err) {
      last = err;
      if (!(err instanceof PortRaceError)) throw err;
    }
  }
  throw last;
}

async function startOnce(build: IstiodBuild, o: IstiodOptions): Promise<Istiod> {
  const cwd = await mkdtemp(join(tmpdir(), "meshvault-istiod-"));
  leftovers.dir(cwd);
  const td = o.trustDomain ?? "cluster.local";

  // Mesh config from a file, as the chart mounts ConfigMap istio at /etc/istio/config.
  // defaultConfig.discoveryAddress: istiod derives its own DNS names from this host
  // (NewServer -> GetDiscoveryAddress -> getDNSNames); it is the chart's value.
  const meshPath = join(cwd, "etc/istio/config/mesh");
  await mkdir(dirname(meshPath), { recursive: true });
  await writeFile(
    meshPath,
    [
      `trustDomain: ${td}`,
      "rootNamespace: istio-system",
      "defaultConfig:",
      "  discoveryAddress: istiod.istio-system.svc:15012",
      "",
    ].join("\n"),
  );
  if (o.servingCert) {
    const tls = join(cwd, "var/run/secrets/istiod/tls");
    const ca = join(cwd, "var/run/secrets/istiod/ca");
    await mkdir(tls, { recursive: true });
    await mkdir(ca, { recursive: true });
    await writeFile(join(tls, "tls.crt"), o.servingCert.tlsCrt);
    await writeFile(join(tls, "tls.key"), o.servingCert.tlsKey, { mode: 0o600 });
    await writeFile(join(ca, "root-cert.pem"), o.servingCert.rootCert);
  }
  const kubeconfig = join(cwd, "kubeconfig");
  await writeFile(kubeconfig, await readFile(o.kube.kubeconfigPath), { mode: 0o600 });

  const [httpPort, securePort] = [await freePort(), await freePort()];
  const args = [
    "discovery",
    // Out of cluster: no service-account mount, so the apiserver comes from a kubeconfig
    // (this one authenticates as system:masters; istiod's RBAC is not under test).
    `--kubeconfig=${kubeconfig}`,
    `--meshConfig=${meshPath}`,
    // /ready, /debug/* and (below, multiplexed) gRPC and metrics on one loopback port
    // instead of :8080, :15010, :15014 on every interface.
    `--httpAddr=127.0.0.1:${httpPort}`,
    // Empty: plaintext XDS (15010) is multiplexed on --httpAddr (initServers).
    "--grpcAddr=",
    // XDS and the CA API over TLS (15012), the port pilot-agent dials.
    `--secureGRPCAddr=127.0.0.1:${securePort}`,
    // Empty: /metrics on --httpAddr; empty --httpsAddr: webhooks on the secure port (no :15017).
    "--monitoringAddr=",
    "--httpsAddr=",
    // ControlZ defaults to localhost:9876, which parallel runs would fight over.
    "--ctrlz_address=127.0.0.1",
    "--ctrlz_port=0",
    `--domain=cluster.local`,
    // Don't wait 10 s (the default) for connections to drain on SIGTERM.
    "--shutdownDuration=1s",
  ];
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: cwd,
    // The pod's downward-API values: istiod's namespace (--namespace default, Leases,
    // the root ConfigMap's home) and its name (leader-election identity).
    POD_NAMESPACE: "istio-system",
    POD_NAME: "istiod-test",
    // The chart's defaults, stated: istiod signs its own serving certificate with its CA,
    // the cluster is "Kubernetes" (what pilot-agent sends as ClusterID).
    PILOT_CERT_PROVIDER: "istiod",
    CLUSTER_ID: "Kubernetes",
    JWT_POLICY: "third-party-jwt",
    ENABLE_CA_SERVER: String(o.caServer ?? true),
    ...(o.cacertsDir ? { ROOT_CA_DIR: o.cacertsDir } : {}),
    // Left at their defaults on purpose: REVISION ("default": no istiod-<rev> names),
    // KUBERNETES_SERVICE_HOST (unset: out of cluster, so istiod reviews tokens through the
    // kubeconfig's apiserver), --keepaliveMaxServerConnectionAge (30m, longer than a test).
    ...o.env,
  };

  const logPath = join(cwd, "istiod.log");
  const proc = startPeerProcess(build.binary, args, logPath, leftovers, { cwd, env });
  const code = proc.exitCode;
  const readLog = (): Promise<string> => readFile(logPath, "utf8").catch(() => "");
  const tail = async (): Promise<string> => (await readLog()).split("\n").slice(-60).join("\n");

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await proc.stop(5_000);
    if (!process.env.MESHVAULT_ISTIOD_KEEP) await rm(cwd, { recursive: true, force: true });
    leftovers.forgetDir(cwd);
  };

  // /ready answers 200 once every readiness probe passes (caches synced, push context built).
  const deadline = Date.now() + 120_000;
  for (;;) {
    const status = await fetch(`http://127.0.0.1:${httpPort}/ready`, { signal: AbortSignal.timeout(2_000) })
      .then((r) => r.status)
      .catch(() => 0);
    if (status === 200) break;
    if (code() !== undefined || Date.now() > deadline) {
      const log = await tail();
      await stop();
      const why = code() !== undefined ? `exited (${code()})` : "not ready after 120 s";
      if (/address already in use/i.test(log)) throw new PortRaceError(`istiod ${why}:\n${log}`);
      throw new Error(`istiod ${why}:\n${log}`);
    }
    await delay(200);
  }

  return {
    cwd,
    cacertsDir: o.cacertsDir,
    httpPort,
    securePort,
    address: `localhost:${securePort}`,
    logPath,
    log: readLog,
    logSize: async () => Buffer.byteLength(await readLog()),
    async waitForLog(re, wo = {}) {
      const limit = Date.now() + (wo.timeoutMs ?? 30_000);
      for (;;) {
        const text = Buffer.from(await readLog())
          .subarray(wo.from ?? 0)
          .toString("utf8");
        const line = text.split("\n").find((l) => re.test(l));
        if (line !== undefined) return line;
        if (code() !== undefined)
          throw new Error(`istiod exited (${code()}) before logging ${re}:\n${await tail()}`);
        if (Date.now() > limit) throw new Error(`istiod did not log ${re}:\n${await tail()}`);
        await delay(100);
      }
    },
    async debug(path) {
      const r = await fetch(`http://127.0.0.1:${httpPort}${path}`);
      if (!r.ok) throw new Error(`istiod ${path}: HTTP ${r.status}`);
      return (await r.json()) as unknown;
    },
    exitCode: code,
    stop,
  };
}
