// The benchmark's peers and plumbing for bench/istiod.ts (and test/bench-harness.test.ts): the
// Go binaries (scripts/ensure-bench-go.sh), a plug-in CA both servers sign with, one
// service-account token both accept, starting `meshvault server` and istiod's CA as processes,
// and running the Go load generator over a plan.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { stringify } from "yaml";
import { generateKeyPairFor, privateKeyPem } from "../src/pki/keys.js";
import { createSigner, issueCa, parseIssued } from "../src/pki/issue.js";
import { waitFor } from "../test/helpers/wait.js";
import { builtCliNodeArgs } from "../test/helpers/cli.js";

export const REPO = join(import.meta.dirname, "..");
export const TD = "cluster.local";
export const NS = "default";
export const SA = "bench";
export const SPIFFE_ID = `spiffe://${TD}/ns/${NS}/sa/${SA}`;
export const ISSUER = "https://bench.meshvault.test";

export interface Target {
  kind: "grpc" | "vault";
  addr?: string;
  serverName?: string;
  url?: string;
  rootsFile: string;
  token: string;
  pids: number[];
}
export interface Row {
  label: string;
  csr: "p256" | "rsa2048";
  callers: number;
  conns: number;
  a: string;
  b: string;
}
export interface Measured {
  ops: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  serverCpuUsPerCert: number;
  clientCpuUsPerCert: number;
  runsPerSecond: number[];
}
export interface RowResult extends Row {
  loadavg: number;
  results: Record<string, Measured>;
}

const children: ChildProcess[] = [];
export const stopAll = (): void => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
};
process.on("exit", stopAll);

/** Starts `cmd`, resolves with the first match of `ready` in its stdout or stderr. */
export function startProcess(
  cmd: string,
  args: string[],
  ready: RegExp,
  what: string,
): Promise<{ child: ChildProcess; port: number; ports: number[] }> {
  const child = spawn(cmd, args, { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    const onData = (d: Buffer): void => {
      out += d.toString();
      const m = ready.exec(out);
      if (m) resolve({ child, port: Number(m[1]), ports: m.slice(1).map(Number) });
      if (out.length > 1 << 20) out = out.slice(-4096);
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) =>
      reject(new Error(`${what} exited (${code}) before it was ready:\n${out.slice(-3000)}`)),
    );
  });
}

/** An Istio plug-in CA directory (P-256 root + intermediate) both servers sign with. */
export function pluginCa(dir: string): string {
  const rootKey = generateKeyPairFor("ec-p256");
  const root = issueCa({
    subject: { organization: "meshvault bench", commonName: "bench root" },
    key: rootKey.privateKey,
    ttlSeconds: 10 * 365 * 86400,
  });
  const interKey = generateKeyPairFor("ec-p256");
  const inter = issueCa(
    {
      subject: { organization: "meshvault bench", commonName: "bench intermediate" },
      key: interKey.publicKey,
      ttlSeconds: 365 * 86400,
      pathLen: 0,
    },
    createSigner(parseIssued(root), rootKey.privateKey),
  );
  writeFileSync(join(dir, "root-cert.pem"), root.pem);
  writeFileSync(join(dir, "ca-cert.pem"), inter.pem);
  writeFileSync(join(dir, "cert-chain.pem"), inter.pem);
  writeFileSync(join(dir, "ca-key.pem"), privateKeyPem(interKey.privateKey), { mode: 0o600 });
  return join(dir, "root-cert.pem");
}

/** RS256 key, its JWKS file, and a Kubernetes-style service-account token both servers accept. */
export async function serviceAccountToken(dir: string): Promise<{ jwksFile: string; token: string }> {
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const jwksFile = join(dir, "jwks.json");
  writeFileSync(
    jwksFile,
    JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "b1", alg: "RS256", use: "sig" }] }),
  );
  const token = await new SignJWT({ "kubernetes.io": { namespace: NS, serviceaccount: { name: SA } } })
    .setProtectedHeader({ alg: "RS256", kid: "b1" })
    .setIssuer(ISSUER)
    .setSubject(`system:serviceaccount:${NS}:${SA}`)
    .setAudience(["istio-ca"])
    .setIssuedAt()
    .setExpirationTime("3h")
    .sign(privateKey);
  return { jwksFile, token };
}

/** `meshvault server` from the build with `config`; `cpus` pins it with taskset. */
export async function startMeshvault(
  dir: string,
  name: string,
  config: Record<string, unknown>,
  cpus?: string,
): Promise<{ port: number; pid: number }> {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    stringify({
      trustDomain: TD,
      dataDir: join(dir, `data-${name}`),
      listen: { grpc: "127.0.0.1:0", http: "127.0.0.1:0" },
      log: { level: "info" },
      ...config,
    }),
  );
  // BENCH_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof": profile the servers under load.
  const nodeArgs = (process.env["BENCH_NODE_ARGS"] ?? "").split(" ").filter(Boolean);
  // MESHVAULT_TEST_CLI: a copy of the build (npm test makes one, scripts/test.sh), so that the
  // package test's `npm pack`, which rebuilds dist/, cannot pull the server out from under a run.
  const built = process.env["MESHVAULT_TEST_CLI"];
  const serve = ["server", "-c", file];
  const node = [
    process.execPath,
    ...nodeArgs,
    ...(built ? builtCliNodeArgs(built, serve) : [join(REPO, "bin", "meshvault.js"), ...serve]),
  ];
  const [cmd, ...args] = cpus ? ["taskset", "-c", cpus, ...node] : node;
  const { child, port, ports } = await startProcess(
    cmd!,
    args,
    /"grpc":"[^"]*:(\d+)","http":"[^"]*:(\d+)"/,
    `meshvault server (${name})`,
  );
  // Listening is not serving: the authority (and, for vault-sign, the serving certificate)
  // starts after the ports are bound, so load starts once /readyz says so.
  const readyz = `http://127.0.0.1:${ports[1]}/readyz`;
  let why = "no answer";
  await waitFor(
    `meshvault server (${name}) /readyz 200`,
    async () => {
      const r = await fetch(readyz).catch(() => undefined);
      why = r ? await r.text() : "no answer";
      return r?.status === 200;
    },
    60_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}: ${why}`);
  });
  return { port, pid: child.pid! };
}

export async function startIstiodCa(
  bin: string,
  caDir: string,
  jwksFile: string,
  cpus?: string,
): Promise<{ port: number; pid: number }> {
  const cmdline = [join(bin, "istiod-ca"), "-ca-dir", caDir, "-issuer", ISSUER, "-jwks-file", jwksFile];
  const [cmd, ...args] = cpus ? ["taskset", "-c", cpus, ...cmdline] : cmdline;
  const { child, port } = await startProcess(cmd!, args, /READY (\d+)/, "istiod-ca");
  return { port, pid: child.pid! };
}

/** Runs the Go load generator over `rows`; one parsed result per row. */
export function loadgen(
  bin: string,
  targets: Record<string, Target>,
  timing: { seconds: number; warmupSeconds: number },
  rows: Row[],
  spiffeId = SPIFFE_ID,
): RowResult[] {
  const plan = {
    ...timing,
    spiffeId,
    csrCount: 16,
    ttlSeconds: 3600,
    targets,
    rows,
  };
  const out = execFileSync(join(bin, "loadgen"), {
    input: JSON.stringify(plan),
    encoding: "utf8",
    stdio: ["pipe", "pipe", "inherit"],
  });
  return out
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as RowResult);
}

/** The processes listening on 127.0.0.1:`port` (OpenBao's server), from `ss`. */
export function listenerPids(port: number): number[] {
  const out = execFileSync("ss", ["-Htlnp", `sport = :${port}`], { encoding: "utf8" });
  return [...new Set([...out.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])))];
}

/** Builds (first run only) and locates the Go peers: istiod-ca and loadgen. */
export function goPeersDir(): string {
  return execFileSync("bash", [join(REPO, "scripts", "ensure-bench-go.sh"), "--print-dir"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
}
