// Istio's REAL control plane with meshvault: istiod (pilot-discovery) and pilot-agent
// built from the same istio.io/istio module, against a REAL kube-apiserver and a REAL
// OpenBao. The judges are Istio's own behaviour (istiod loads, signs, reloads, serves
// XDS; pilot-agent gets certificates and connects) and openssl verifying the chains to
// the root read from Vault's API.
//
//   - stock istiod on a Vault intermediate (seeds 002/003): `meshvault cacerts --out-dir`
//     fills istiod's plug-in CA directory, the intermediate is renewed under istiod.
//   - meshvault as istiod's external CA: istiod with ENABLE_CA_SERVER=false serves XDS with
//     the istiod-tls Secret meshvault writes; pilot-agent gets its certificate from meshvault
//     and connects to istiod's XDS over TLS, verifying istiod against meshvault's root.
//   - seed 001 with stock istiod: `meshvault cacerts --source vault-kv` keeps the plug-in CA
//     directory on the CA pair in Vault KV, following new versions, refusing a bad one.
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import type { ChildProcess } from "node:child_process";
import { cli, spawnCli } from "../helpers/cli.js";
import { startKube, type KubeEnv } from "../helpers/kube.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { opensslVerify } from "../helpers/openssl.js";
import {
  AGENT_PATHS,
  istioAgentBuild,
  sdsFetch,
  startIstioAgent,
  type IstioAgent,
} from "../helpers/istio-agent.js";
import { SdsTestClient, type WireDiscoveryResponse } from "../helpers/sds-client.js";
import { istiodBuild, startIstiod, type Istiod } from "../helpers/istiod.js";
import { waitFor } from "../helpers/wait.js";
import { VaultClient } from "../../src/vault/index.js";
import { loadServerConfig } from "../../src/config/load.js";
import { startCaServer } from "../../src/server/run.js";
import { silentLogger } from "../../src/log/logger.js";

const NS = "shop";
let kube: KubeEnv;
let bao: OpenBao;
let vault: VaultClient;
let dir: string;
/** Everything a test started, stopped in reverse order after it, even when it fails. */
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => {});
});

before(async () => {
  // Build (or find) both Istio binaries first, so a build failure is reported as such.
  await Promise.all([istiodBuild(), istioAgentBuild()]);
  [kube, bao] = await Promise.all([startKube(), startOpenBao()]);
  await kube.createNamespace("istio-system");
  await kube.createNamespace(NS);
  for (const sa of ["sleep", "ratings", "reviews"]) await kube.createServiceAccount(NS, sa);
  vault = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  // Seed 002/003's Vault: a root in `pki`, a second PKI mount for exported intermediates.
  await vault.write("sys/mounts/pki", { type: "pki", config: { max_lease_ttl: "87600h" } });
  await vault.write("sys/mounts/pki_int", { type: "pki", config: { max_lease_ttl: "43800h" } });
  await vault.write("pki/root/generate/internal", { common_name: "meshvault-test root", ttl: "8760h" });
  dir = mkdtempSync(join(tmpdir(), "meshvault-istiod-test-"));
});

after(async () => {
  vault?.close();
  await Promise.all([kube?.stop(), bao?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const pems = (text: string): string[] =>
  text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
const fingerprint = (pem: string): string =>
  createHash("sha256").update(new X509Certificate(pem).raw).digest("hex");

/** Vault's root as Vault's API publishes it (unauthenticated, PEM). */
async function vaultRoot(mount = "pki"): Promise<string> {
  const r = await fetch(`${bao.addr}/v1/${mount}/ca/pem`);
  assert.equal(r.status, 200, `GET ${mount}/ca/pem`);
  return r.text();
}

/** `meshvault cacerts ...` as a user runs it, against the test's OpenBao. */
function cacertsEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: dir, VAULT_ADDR: bao.addr, VAULT_TOKEN: bao.rootToken };
}

/** A long-running CLI process (stopped after the test); `output()` is its log (stderr) so far. */
function runCli(args: string[]): { child: ChildProcess; output(): string } {
  const child = spawnCli(args, { env: cacertsEnv(), stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr?.setEncoding("utf8").on("data", (c: string) => (err += c));
  const exited = new Promise((r) => child.once("exit", r));
  let stopping = false;
  cleanups.push(async () => {
    stopping = true;
    if (child.exitCode === null) child.kill("SIGTERM");
    await exited;
  });
  // It should run until the test stops it: say so when it does not.
  child.once("exit", (code) => {
    if (!stopping) process.stderr.write(`meshvault ${args.join(" ")} exited early (${code}):\n${err}\n`);
  });
  return { child, output: () => err };
}

async function agentFor(sa: string, caAddress: string, caRootPem: string, discoveryAddress?: string) {
  const agent: IstioAgent = await startIstioAgent({
    mode: "sidecar",
    caAddress,
    caRootPem,
    // A projected token for audience istio-ca, as the injector mounts it.
    token: await kube.requestToken(NS, sa, ["istio-ca"]),
    namespace: NS,
    serviceAccount: sa,
    ...(discoveryAddress ? { discoveryAddress } : {}),
  });
  cleanups.push(() => agent.stop());
  // The SDS socket appears once the agent holds a certificate (or is still fetching one).
  await agent.waitForFile(agent.sdsSocketPath, 30_000);
  return agent;
}

/**
 * The chain pilot-agent serves Envoy: leaf for `sa`, signed by `intermediatePem`, and
 * openssl verifies it (client and server use) up to `rootPem` alone.
 */
function assertWorkloadChain(chainPem: string, sa: string, intermediatePem: string, rootPem: string): void {
  const certs = pems(chainPem);
  assert.ok(certs.length >= 2, `chain has ${certs.length} certificates`);
  const leaf = new X509Certificate(certs[0]!);
  assert.equal(leaf.subjectAltName, `URI:spiffe://cluster.local/ns/${NS}/sa/${sa}`);
  assert.equal(fingerprint(certs[1]!), fingerprint(intermediatePem), "the leaf's issuer is the expected CA");
  assert.ok(leaf.verify(new X509Certificate(intermediatePem).publicKey), "the CA signed the leaf");
  for (const purpose of ["sslclient", "sslserver"]) {
    const [ok, out] = opensslVerify(rootPem, certs.slice(1).join("\n"), certs[0]!, purpose);
    assert.ok(ok, `openssl verify -purpose ${purpose} against Vault's root: ${out}`);
  }
}

/** istio-ca-root-cert in `ns` (what sidecars mount as their root), once it has `rootPem`. */
async function rootConfigMap(ns: string, rootPem: string): Promise<string> {
  return waitFor(
    `ConfigMap ${ns}/istio-ca-root-cert carrying the expected root`,
    async () => {
      const r = await kube.request(
        "GET",
        `/api/v1/namespaces/${ns}/configmaps/istio-ca-root-cert`,
        undefined,
        {
          expectOk: false,
        },
      );
      const pem = (r.body as { data?: Record<string, string> }).data?.["root-cert.pem"];
      return r.status === 200 && pem && pems(pem).some((p) => fingerprint(p) === fingerprint(rootPem))
        ? pem
        : undefined;
    },
    60_000,
  );
}

/** The certificate istiod serves on its secure gRPC port (XDS, CA API), as sidecars see it. */
function istiodServingCert(istiod: Istiod): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = connect(
      {
        host: "127.0.0.1",
        port: istiod.securePort,
        servername: "istiod.istio-system.svc",
        rejectUnauthorized: false,
        ALPNProtocols: ["h2"],
      },
      () => {
        const c = s.getPeerX509Certificate();
        s.destroy();
        if (c) resolve(c);
        else reject(new Error("istiod presented no certificate"));
      },
    );
    s.once("error", reject);
  });
}

test("stock istiod on a Vault intermediate (seeds 002/003): meshvault cacerts fills its plug-in CA, renews it under it", async () => {
  const root = await vaultRoot();
  const cacertsDir = join(dir, "etc-cacerts");
  const common = ["--source", "vault", "--out-dir", cacertsDir, "--ttl", "100s", "--renew-at", "0.3"];

  // Init container: one pass, csr mode (the key is made by meshvault and written only here).
  const init = await cli(
    ["cacerts", ...common, "--mode", "csr", "--once", "--log-level", "warn"],
    cacertsEnv(),
  );
  assert.equal(init.code, 0, `cacerts --once failed:\n${init.out}\n${init.err}`);
  const first = readFileSync(join(cacertsDir, "ca-cert.pem"), "utf8");

  const istiod = await startIstiod({ kube, cacertsDir });
  cleanups.push(() => istiod.stop());
  // The plug-in CA path (not a self-signed root of istiod's own).
  await istiod.waitForLog(/Use local CA certificate/);

  // istiod publishes Vault's root to every namespace, and serves a certificate from the intermediate.
  const published = await rootConfigMap(NS, root);
  await rootConfigMap("istio-system", root);
  assert.equal(pems(published).length, 1, "only Vault's root is published");
  const serving = await istiodServingCert(istiod);
  assert.ok(
    serving.verify(new X509Certificate(first).publicKey),
    "istiod's serving cert is signed by the intermediate",
  );

  // Istio's pilot-agent gets its certificate from istiod's CA, trusting the published root.
  const sleep = await agentFor("sleep", istiod.address, published);
  const def = await sdsFetch(sleep, "default", 30_000);
  assertWorkloadChain(def.certificateChain!, "sleep", first, root);
  const rootca = await sdsFetch(sleep, "ROOTCA");
  assert.equal(fingerprint(rootca.trustedCa!), fingerprint(root), "the agent's ROOTCA is Vault's root");

  // Sidecar (exported mode: Vault generates the key at pki_int): renewal is due after 30% of
  // the 100 s lifetime counted from notBefore, which Vault backdates 30 s, so it renews within
  // seconds, into the same directory, under the running istiod.
  const logFrom = await istiod.logSize();
  runCli(["cacerts", ...common, "--mode", "exported", "--log-level", "warn"]);
  const renewed = await waitFor(
    "the renewed intermediate in istiod's cacerts directory",
    async () => {
      const cur = readFileSync(join(cacertsDir, "ca-cert.pem"), "utf8");
      return cur !== first ? cur : undefined;
    },
    90_000,
  );
  await istiod.waitForLog(/detected the newly added intermediate CA/, { from: logFrom, timeoutMs: 30_000 });
  assert.equal(istiod.exitCode(), undefined, "istiod was not restarted");

  // The next workload certificate chains through the new intermediate, to the same Vault root.
  const ratings = await agentFor("ratings", istiod.address, published);
  const next = await sdsFetch(ratings, "default", 30_000);
  assertWorkloadChain(next.certificateChain!, "ratings", renewed, root);
  const reserved = await istiodServingCert(istiod);
  assert.ok(
    reserved.verify(new X509Certificate(renewed).publicKey),
    "istiod re-signed its serving certificate with the renewed intermediate",
  );
});

const CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/**
 * Plays Envoy on pilot-agent's XDS socket: the node from the bootstrap the agent wrote for
 * Envoy (its id and string metadata), a CDS request. The agent forwards it to istiod over
 * TLS; resolves with istiod's first answer.
 */
async function envoyAsksForClusters(agent: IstioAgent): Promise<WireDiscoveryResponse> {
  const bootstrap = JSON.parse(await agent.envoyBootstrap()) as {
    node: { id: string; cluster: string; metadata: Record<string, unknown> };
  };
  const metadata = Object.fromEntries(
    Object.entries(bootstrap.node.metadata).filter((e): e is [string, string] => typeof e[1] === "string"),
  );
  const client = new SdsTestClient(`unix:${join(agent.cwd, AGENT_PATHS.xdsSocket)}`);
  cleanups.push(async () => client.close());
  const stream = client.streamAggregatedResources();
  cleanups.push(async () => stream.cancel());
  stream.send({
    node: { id: bootstrap.node.id, cluster: bootstrap.node.cluster, metadata },
    typeUrl: CLUSTER_TYPE,
  });
  return stream.next(30_000);
}

test("meshvault as istiod's external CA: istiod serves XDS with meshvault's istiod-tls, pilot-agent gets meshvault's certificate and connects", async () => {
  const root = await vaultRoot();
  // The root ConfigMaps an earlier istiod wrote go: these must be meshvault's.
  for (const ns of ["istio-system", NS])
    await kube.request("DELETE", `/api/v1/namespaces/${ns}/configmaps/istio-ca-root-cert`, undefined, {
      expectOk: false,
    });
  const server = await startCaServer(
    loadServerConfig({
      env: {},
      overrides: {
        dataDir: join(dir, "meshvault-data"),
        "listen.grpc": "127.0.0.1:0",
        "listen.http": "127.0.0.1:0",
        "log.level": "silent",
        vault: { address: bao.addr, token: bao.rootToken },
        // Seed 002's shape inside meshvault: an intermediate from Vault's root, key in memory.
        authority: { type: "vault-intermediate", mode: "csr", rootMount: "pki", ttl: "2h" },
        // pilot-agent dials CA_ADDR 127.0.0.1:<port> and checks that IP SAN.
        "servingCertificate.ipAddresses": ["127.0.0.1"],
        kubernetes: { kubeconfig: kube.kubeconfigPath, istiodCertificate: { enabled: true } },
      },
    }),
    { log: silentLogger(), defaultMetrics: false },
  );
  await server.firstAttempt;
  cleanups.push(() => server.close());

  // What meshvault writes for istiod: Secret istio-system/istiod-tls, ConfigMap istio-ca-root-cert.
  const tls = await waitFor(
    "Secret istio-system/istiod-tls",
    async () => {
      const r = await kube.request("GET", "/api/v1/namespaces/istio-system/secrets/istiod-tls", undefined, {
        expectOk: false,
      });
      const data = (r.body as { data?: Record<string, string> }).data;
      return r.status === 200 && data?.["tls.crt"] && data["tls.key"]
        ? {
            crt: Buffer.from(data["tls.crt"], "base64").toString("utf8"),
            key: Buffer.from(data["tls.key"], "base64").toString("utf8"),
          }
        : undefined;
    },
    30_000,
  );
  const published = await rootConfigMap("istio-system", root);
  await rootConfigMap(NS, root);

  // istiod without its CA, with the Secret and the ConfigMap where the chart mounts them.
  const istiod = await startIstiod({
    kube,
    caServer: false,
    servingCert: { tlsCrt: tls.crt, tlsKey: tls.key, rootCert: published },
  });
  cleanups.push(() => istiod.stop());
  // Ready means its CA would have been created by now: there is none.
  assert.doesNotMatch(
    await istiod.log(),
    /Istiod CA has started|Use local CA certificate|Use self-signed certificate/,
  );
  const serving = await istiodServingCert(istiod);
  assert.equal(
    fingerprint(serving.toString()),
    fingerprint(pems(tls.crt)[0]!),
    "istiod serves meshvault's istiod-tls",
  );

  // pilot-agent: certificate from meshvault (CA_ADDR), XDS from istiod, both verified
  // against the root meshvault published.
  const reviews = await agentFor("reviews", `127.0.0.1:${server.grpcPort}`, published, istiod.address);
  const def = await sdsFetch(reviews, "default", 30_000);
  const meshvaultCa = pems(tls.crt)[1]!; // istiod-tls: istiod's certificate, then meshvault's intermediate
  assertWorkloadChain(def.certificateChain!, "reviews", meshvaultCa, root);

  // Envoy (played by the test) asks the agent for clusters; the agent dials istiod over TLS.
  const cds = await envoyAsksForClusters(reviews);
  assert.equal(cds.typeUrl, CLUSTER_TYPE);
  assert.ok(cds.resources.length > 0, "istiod sent clusters");
  await reviews.waitForLog(/connected to upstream XDS server/);
  const conns = (await istiod.debug("/debug/connections")) as { clients?: { connectionId: string }[] };
  assert.ok(
    conns.clients?.some((c) => c.connectionId.startsWith(`reviews-0.${NS}-`)),
    `istiod lists the proxy: ${JSON.stringify(conns)}`,
  );
});

/** A CA as seed 001 keeps it in KV: an intermediate whose key Vault exported, signed by Vault's root. */
async function kvCa(cn: string, rootPem: string): Promise<Record<string, string>> {
  const g = await vault.write<{ csr: string; private_key: string }>(
    "pki_int/intermediate/generate/exported",
    {
      common_name: cn,
      key_type: "ec",
      key_bits: 256,
    },
  );
  const s = await vault.write<{ certificate: string }>("pki/root/sign-intermediate", {
    csr: g!.data!.csr,
    common_name: cn,
    ttl: "720h",
    max_path_length: 0,
    format: "pem",
  });
  const certificate = `${s!.data!.certificate.trim()}\n`;
  return { certificate, privateKey: g!.data!.private_key, chain: `${certificate}${rootPem}`, root: rootPem };
}

test("seed 001 with stock istiod: meshvault cacerts --source vault-kv follows the CA in Vault KV, refuses a bad version", async () => {
  const root = await vaultRoot();
  const cacertsDir = join(dir, "etc-cacerts-kv");
  const ref = "vault:secret/data/pki/istiod";
  const ca1 = await kvCa("istiod CA v1", root);
  await vault.write("secret/data/pki/istiod", { data: ca1 });

  // The sidecar next to istiod: the CA from KV into the directory, following new versions.
  const cacerts = runCli([
    "cacerts",
    "--source",
    "vault-kv",
    "--out-dir",
    cacertsDir,
    "--kv-certificate",
    `${ref}#certificate`,
    "--kv-private-key",
    `${ref}#privateKey`,
    "--kv-chain",
    `${ref}#chain`,
    "--kv-root",
    `${ref}#root`,
    "--poll-interval",
    "1s",
  ]);
  const caCert = (): string => readFileSync(join(cacertsDir, "ca-cert.pem"), "utf8");
  await waitFor("the KV CA in istiod's cacerts directory", async () => {
    try {
      return fingerprint(caCert()) === fingerprint(ca1.certificate!);
    } catch {
      return false;
    }
  });

  const istiod = await startIstiod({ kube, cacertsDir });
  cleanups.push(() => istiod.stop());
  await istiod.waitForLog(/Use local CA certificate/);
  const published = await rootConfigMap(NS, root);
  const sleep = await agentFor("sleep", istiod.address, published);
  assertWorkloadChain(
    (await sdsFetch(sleep, "default", 30_000)).certificateChain!,
    "sleep",
    ca1.certificate!,
    root,
  );

  // A bad version (v2: another CA's certificate with v1's key) is refused; the directory keeps v1.
  const ca2 = await kvCa("istiod CA v2", root);
  await vault.write("secret/data/pki/istiod", { data: { ...ca2, privateKey: ca1.privateKey } });
  await waitFor("cacerts to refuse KV version 2", async () =>
    /refused the new CA in Vault KV/.test(cacerts.output()),
  ).catch((err: Error) => {
    throw new Error(`${err.message}; meshvault cacerts logged:\n${cacerts.output().slice(-4000)}`);
  });
  assert.equal(fingerprint(caCert()), fingerprint(ca1.certificate!), "the refused version was not written");

  // A good version (v3) reaches istiod without a restart; the next workload chains through it.
  const logFrom = await istiod.logSize();
  await vault.write("secret/data/pki/istiod", { data: ca2 });
  await waitFor(
    "KV version 3 in istiod's cacerts directory",
    async () => fingerprint(caCert()) === fingerprint(ca2.certificate!),
  );
  await istiod.waitForLog(/detected the newly added intermediate CA/, { from: logFrom });
  assert.equal(istiod.exitCode(), undefined, "istiod was not restarted");
  const ratings = await agentFor("ratings", istiod.address, published);
  assertWorkloadChain(
    (await sdsFetch(ratings, "default", 30_000)).certificateChain!,
    "ratings",
    ca2.certificate!,
    root,
  );
});
