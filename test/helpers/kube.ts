// Test harness: a REAL etcd + kube-apiserver on loopback, built from the Go module
// proxy by scripts/ensure-kube-peers.sh (wrapper modules in test/kube-peers/) and
// started with the flags envtest uses. No fake API server.
//
//   const kube = await startKube();
//   try { ... } finally { await kube.stop(); }
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { startPeerProcess, type PeerProcess } from "./proc.js";
import { Leftovers } from "./leftovers.js";
import { freePort } from "./ports.js";
import { delay } from "./wait.js";
import { createSign, generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileP = promisify(execFile);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The service-account token issuer (and default API audience) of the harness. */
export const KUBE_SA_ISSUER = "https://kubernetes.default.svc.cluster.local";

/** A well-formed RS256 service-account JWT with the right claims, signed by a key no apiserver knows. */
export function forgeServiceAccountToken(ns: string, sa: string, issuer: string): string {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const header = b64({ alg: "RS256", typ: "JWT" });
  const payload = b64({
    iss: issuer,
    aud: ["istio-ca"],
    sub: `system:serviceaccount:${ns}:${sa}`,
    iat: now,
    nbf: now,
    exp: now + 3600,
    "kubernetes.io": {
      namespace: ns,
      serviceaccount: { name: sa, uid: "00000000-0000-0000-0000-000000000000" },
    },
  });
  const sig = createSign("RSA-SHA256").update(`${header}.${payload}`).sign(privateKey).toString("base64url");
  return `${header}.${payload}.${sig}`;
}

export interface KubeResponse {
  status: number;
  /** Parsed JSON body (or the raw text when it is not JSON). */
  body: unknown;
}

export interface KubeRequestOptions {
  /** Bearer token; defaults to the admin token. Pass "" for an anonymous request. */
  token?: string;
  /** Throw unless the status is 2xx (default true). */
  expectOk?: boolean;
}

export interface KubeEnv {
  /** "https://127.0.0.1:<port>" */
  server: string;
  /** PEM that verifies the apiserver's self-signed serving certificate. */
  caPem: string;
  /** Bearer token of user "admin" in group system:masters. */
  adminToken: string;
  /** A kubeconfig file (cluster + admin token) for @kubernetes/client-node's loadFromFile. */
  kubeconfigPath: string;
  /** The service-account token issuer (--service-account-issuer). */
  issuer: string;
  /** Kills kube-apiserver and etcd and removes their temp directory. Idempotent. */
  stop(): Promise<void>;
  /** A raw call to the API server, e.g. request("POST", "/api/v1/namespaces", {...}). */
  request(method: string, path: string, body?: unknown, opts?: KubeRequestOptions): Promise<KubeResponse>;
  createNamespace(name: string): Promise<void>;
  createServiceAccount(ns: string, name: string): Promise<void>;
  deleteServiceAccount(ns: string, name: string): Promise<void>;
  /** A projected token from the TokenRequest API (expirationSeconds >= 600, the apiserver minimum). */
  requestToken(ns: string, sa: string, audiences: string[], expirationSeconds?: number): Promise<string>;
  /** Writes another kubeconfig for this cluster that authenticates with `token`; returns its path. */
  writeKubeconfig(token: string, name?: string): Promise<string>;
}

/** The directory holding kube-apiserver and etcd, building them on first use. */
export async function kubePeersDir(): Promise<string> {
  const override = process.env.MESHVAULT_KUBE_PEERS_DIR;
  if (override) return override;
  const script = join(repoRoot, "scripts", "ensure-kube-peers.sh");
  try {
    const { stdout } = await execFileP("bash", [script, "--print-dir"], {
      cwd: repoRoot,
      maxBuffer: 64 * 1024 * 1024,
    });
    const dir = stdout.trim().split("\n").pop();
    if (!dir) throw new Error("ensure-kube-peers.sh printed no directory");
    return dir;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`building kube peers failed: ${e.message}\n${e.stderr ?? ""}`, { cause: err });
  }
}

const leftovers = new Leftovers("MESHVAULT_KUBE_KEEP");

/**
 * A detached watchdog that SIGKILLs the given pids and removes `dir` once this
 * process is gone; it covers deaths that skip the "exit" hook (SIGKILL, signals).
 */
function watchdog(dir: string, pids: number[]): ChildProcess {
  const script =
    `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; kill -9 "\${@:2}" 2>/dev/null; ` +
    `sleep 1; [ -n "$MESHVAULT_KUBE_KEEP" ] || rm -rf -- "$1"`;
  const args = ["-c", script, "kube-watchdog", dir, ...pids.map(String)];
  const dog = spawn("bash", args, { detached: true, stdio: "ignore" });
  dog.unref();
  return dog;
}

async function logTail(path: string, lines = 40): Promise<string> {
  const text = await readFile(path, "utf8").catch(() => "");
  return text.split("\n").slice(-lines).join("\n");
}

interface RawOpts {
  server: string;
  caPem: string;
  token: string;
  timeoutMs?: number;
}

function rawRequest(o: RawOpts, method: string, path: string, body?: unknown): Promise<KubeResponse> {
  const url = new URL(path, o.server);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string | number> = { accept: "application/json" };
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  if (payload) {
    headers["content-type"] = "application/json";
    headers["content-length"] = payload.length;
  }
  return new Promise((res, rej) => {
    const req = httpsRequest(
      url,
      { method, headers, ca: o.caPem, timeout: o.timeoutMs ?? 30_000, agent: false },
      (resp) => {
        const chunks: Buffer[] = [];
        resp.on("data", (c: Buffer) => chunks.push(c));
        resp.on("error", rej);
        resp.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON (e.g. /readyz): keep the text
          }
          res({ status: resp.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${path}: timed out`)));
    req.on("error", rej);
    req.end(payload);
  });
}

function kubeconfigYaml(server: string, caPem: string, token: string, user: string): string {
  const ca = Buffer.from(caPem).toString("base64");
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "  - name: meshvault-test",
    "    cluster:",
    `      server: ${server}`,
    `      certificate-authority-data: ${ca}`,
    "users:",
    `  - name: ${user}`,
    "    user:",
    `      token: ${token}`,
    "contexts:",
    "  - name: meshvault-test",
    "    context:",
    "      cluster: meshvault-test",
    `      user: ${user}`,
    "current-context: meshvault-test",
    "",
  ].join("\n");
}

export interface StartKubeOptions {
  /** How long to wait for /readyz (default 90 s). */
  readyTimeoutMs?: number;
  /** Extra kube-apiserver flags, e.g. ["--feature-gates=..."]. */
  apiserverArgs?: string[];
}

/** Starts etcd and kube-apiserver on free loopback ports; retries once on a port race. */
export async function startKube(opts: StartKubeOptions = {}): Promise<KubeEnv> {
  const dir = await kubePeersDir();
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(dir, opts);
    } catch (err) {
      lastErr = err;
      if (!(err instanceof PortRaceError)) throw err;
    }
  }
  throw lastErr;
}

class PortRaceError extends Error {}

async function startOnce(binDir: string, opts: StartKubeOptions): Promise<KubeEnv> {
  const work = await mkdtemp(join(tmpdir(), "meshvault-kube-"));
  leftovers.dir(work);
  const procs: PeerProcess[] = [];
  let dog: ChildProcess | undefined;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // apiserver first (it would otherwise keep retrying etcd), then etcd.
    for (const p of [...procs].reverse()) await p.stop(3_000);
    if (dog?.pid !== undefined) {
      try {
        process.kill(-dog.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    if (!process.env.MESHVAULT_KUBE_KEEP) await rm(work, { recursive: true, force: true });
    leftovers.forgetDir(work);
  };

  try {
    const [clientPort, peerPort, securePort] = [await freePort(), await freePort(), await freePort()];

    // etcd: single member, loopback, no fsync (test data only).
    const etcdUrl = `http://127.0.0.1:${clientPort}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    const etcd = startPeerProcess(
      join(binDir, "etcd"),
      [
        "--name=default",
        `--data-dir=${join(work, "etcd")}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=default=${peerUrl}`,
        "--unsafe-no-fsync=true",
        "--log-level=warn",
      ],
      join(work, "etcd.log"),
      leftovers,
    );
    procs.push(etcd);

    // Service-account signing key and the admin token file.
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const saKey = join(work, "sa.key");
    const saPub = join(work, "sa.pub");
    await writeFile(saKey, privateKey.export({ type: "pkcs1", format: "pem" }), { mode: 0o600 });
    await writeFile(saPub, publicKey.export({ type: "spki", format: "pem" }));
    const adminToken = randomBytes(24).toString("hex");
    const tokenFile = join(work, "tokens.csv");
    await writeFile(tokenFile, `${adminToken},admin,admin-uid,"system:masters"\n`, { mode: 0o600 });
    const certDir = join(work, "certs");

    await waitEtcd(etcd, etcdUrl, 30_000);

    const apiserver = startPeerProcess(
      join(binDir, "kube-apiserver"),
      [
        `--etcd-servers=${etcdUrl}`,
        `--cert-dir=${certDir}`,
        `--secure-port=${securePort}`,
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        `--service-account-issuer=${KUBE_SA_ISSUER}`,
        `--api-audiences=${KUBE_SA_ISSUER}`,
        `--service-account-key-file=${saPub}`,
        `--service-account-signing-key-file=${saKey}`,
        `--token-auth-file=${tokenFile}`,
        "--authorization-mode=RBAC",
        "--disable-admission-plugins=ServiceAccount",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        "--profiling=false",
        "-v=0",
        ...(opts.apiserverArgs ?? []),
      ],
      join(work, "kube-apiserver.log"),
      leftovers,
    );
    procs.push(apiserver);
    dog = watchdog(
      work,
      procs.map((p) => p.child.pid).filter((pid): pid is number => pid !== undefined),
    );

    const server = `https://127.0.0.1:${securePort}`;
    const caPem = await waitApiserver(
      apiserver,
      etcd,
      server,
      certDir,
      adminToken,
      opts.readyTimeoutMs ?? 90_000,
    );

    const kubeconfigPath = join(work, "kubeconfig");
    await writeFile(kubeconfigPath, kubeconfigYaml(server, caPem, adminToken, "admin"), { mode: 0o600 });

    const request = async (
      method: string,
      path: string,
      body?: unknown,
      ropts: KubeRequestOptions = {},
    ): Promise<KubeResponse> => {
      const r = await rawRequest({ server, caPem, token: ropts.token ?? adminToken }, method, path, body);
      if ((ropts.expectOk ?? true) && (r.status < 200 || r.status > 299)) {
        throw new Error(`${method} ${path} -> ${r.status}: ${JSON.stringify(r.body)}`);
      }
      return r;
    };
    let kubeconfigs = 0;

    return {
      server,
      caPem,
      adminToken,
      kubeconfigPath,
      issuer: KUBE_SA_ISSUER,
      stop,
      request,
      async createNamespace(name) {
        await request("POST", "/api/v1/namespaces", {
          apiVersion: "v1",
          kind: "Namespace",
          metadata: { name },
        });
      },
      async createServiceAccount(ns, name) {
        await request("POST", `/api/v1/namespaces/${ns}/serviceaccounts`, {
          apiVersion: "v1",
          kind: "ServiceAccount",
          metadata: { name, namespace: ns },
        });
      },
      async deleteServiceAccount(ns, name) {
        await request("DELETE", `/api/v1/namespaces/${ns}/serviceaccounts/${name}`);
      },
      async requestToken(ns, sa, audiences, expirationSeconds = 3600) {
        const r = await request("POST", `/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`, {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: { audiences, expirationSeconds },
        });
        const token = (r.body as { status?: { token?: unknown } }).status?.token;
        if (typeof token !== "string" || !token) throw new Error(`TokenRequest returned no token`);
        return token;
      },
      async writeKubeconfig(token, name = `user-${++kubeconfigs}`) {
        const path = join(work, `kubeconfig-${name}`);
        await writeFile(path, kubeconfigYaml(server, caPem, token, name), { mode: 0o600 });
        return path;
      },
    };
  } catch (err) {
    const logs = await Promise.all(procs.map(async (p) => `--- ${p.logPath}\n${await logTail(p.logPath)}`));
    await stop();
    const msg = err instanceof Error ? err.message : String(err);
    const all = logs.join("\n");
    if (/address already in use/i.test(all)) throw new PortRaceError(`${msg}\n${all}`);
    throw new Error(`${msg}\n${all}`, { cause: err });
  }
}

async function waitEtcd(etcd: PeerProcess, url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (etcd.exitCode() !== undefined) throw new Error(`etcd exited (${String(etcd.exitCode())})`);
    const ok = await fetch(`${url}/health`)
      .then(async (r) => r.ok && ((await r.json()) as { health?: string }).health === "true")
      .catch(() => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`etcd not healthy after ${timeoutMs} ms`);
    await delay(100);
  }
}

async function waitApiserver(
  apiserver: PeerProcess,
  etcd: PeerProcess,
  server: string,
  certDir: string,
  token: string,
  timeoutMs: number,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    for (const [name, p] of [
      ["kube-apiserver", apiserver],
      ["etcd", etcd],
    ] as const) {
      if (p.exitCode() !== undefined) throw new Error(`${name} exited (${String(p.exitCode())})`);
    }
    // The self-signed serving cert (and its CA) appear in cert-dir once serving starts.
    const caPem = await readFile(join(certDir, "apiserver.crt"), "utf8").catch(() => "");
    if (caPem) {
      const r = await rawRequest({ server, caPem, token, timeoutMs: 5_000 }, "GET", "/readyz").catch(
        (e: Error) => ({ status: 0, body: e.message }),
      );
      if (r.status === 200) return caPem;
      last = `${r.status} ${typeof r.body === "string" ? r.body.slice(-500) : JSON.stringify(r.body)}`;
    }
    if (Date.now() > deadline) throw new Error(`kube-apiserver not ready after ${timeoutMs} ms: ${last}`);
    await delay(200);
  }
}
