// `meshvault cacerts` against a REAL kube-apiserver and a REAL OpenBao: the Secret's
// content is a valid plug-in CA (openssl agrees), it is renewed, it is kept when still
// fresh; --out-dir writes 0600 keys and no Secret; Vault csr and exported modes; the
// CA pair from Vault KV (--source vault-kv). With the real istiod: test/istio/istiod.test.ts.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadKubeConfig } from "../../src/kube/client.js";
import { runCaCerts, syncCaCerts } from "../../src/kube/cacerts.js";
import { DirSink, SecretSink } from "../../src/kube/cacerts-sinks.js";
import { LocalIntermediateSource, VaultIntermediateSource } from "../../src/kube/intermediate-source.js";
import { runCaCertsCommand } from "../../src/cli/cacerts.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { VaultClient } from "../../src/vault/index.js";
import { EC_P256_KEY, openssl, opensslSelfSigned, opensslVerify } from "../helpers/openssl.js";
import { cli } from "../helpers/cli.js";
import { startKube, type KubeEnv } from "../helpers/kube.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { recordingLog } from "../helpers/recording-log.js";
import { waitFor } from "../helpers/wait.js";
import { silentLog } from "../../src/log/logger.js";

let kube: KubeEnv;
let bao: OpenBao;
let dir: string;
const quiet = silentLog;

interface SecretBody {
  metadata: { resourceVersion: string };
  type?: string;
  data: Record<string, string>;
}

async function secret(name = "cacerts"): Promise<SecretBody | undefined> {
  const r = await kube.request("GET", `/api/v1/namespaces/istio-system/secrets/${name}`, undefined, {
    expectOk: false,
  });
  return r.status === 200 ? (r.body as SecretBody) : undefined;
}

const decode = (s: SecretBody): Record<string, string> =>
  Object.fromEntries(Object.entries(s.data).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]));

/** Independent check with openssl: key matches cert, CA cert chains to root-cert.pem via cert-chain.pem. */
function assertValidPluginCa(files: Record<string, string>): void {
  for (const f of ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"])
    assert.ok(files[f], `${f} present`);
  const certPub = openssl(["x509", "-noout", "-pubkey"], files["ca-cert.pem"]);
  const keyPub = openssl(["pkey", "-pubout"], files["ca-key.pem"]);
  assert.equal(certPub, keyPub, "ca-key.pem matches ca-cert.pem");
  const [ok, out] = opensslVerify(
    files["root-cert.pem"]!,
    files["cert-chain.pem"]!,
    files["ca-cert.pem"]!,
    "any",
  );
  assert.ok(ok, out);
  const ca = parseCertificate(files["ca-cert.pem"]!);
  assert.equal(ca.isCa, true);
  assert.ok(
    files["cert-chain.pem"]!.startsWith(files["ca-cert.pem"]!.trim()),
    "cert-chain.pem starts with ca-cert.pem",
  );
}

before(async () => {
  [kube, bao] = await Promise.all([startKube(), startOpenBao()]);
  await kube.createNamespace("istio-system");
  dir = mkdtempSync(join(tmpdir(), "meshvault-cacerts-"));
});

after(async () => {
  await Promise.all([kube?.stop(), bao?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("Secret istio-system/cacerts: valid plug-in CA, kept while fresh, renewed before expiry", async () => {
  const kc = loadKubeConfig({ kubeconfig: kube.kubeconfigPath });
  const sink = new SecretSink({ kubeConfig: kc });
  const source = new LocalIntermediateSource({
    dataDir: join(dir, "local"),
    trustDomain: "cluster.local",
    ttlSeconds: 8,
  });

  // The local CA backdates notBefore by 2 min, so with an 8 s TTL "fresh" needs renewAt near 1:
  // 0.99 of 128 s leaves ~6.7 s in which the re-run below must see it fresh (0.95 left 1.6 s,
  // too little on a loaded machine), and renewal still comes before the 8 s are up.
  const renewAt = 0.99;
  const first = await syncCaCerts({ source, sink, tlsLayout: true, renewAt, log: quiet });
  assert.equal(first.action, "issued");
  assert.equal(first.write, "created");
  const s1 = (await secret())!;
  assert.equal(s1.type, "Opaque");
  const f1 = decode(s1);
  assertValidPluginCa(f1);
  assert.equal(f1["tls.crt"], f1["ca-cert.pem"]);
  assert.equal(f1["tls.key"], f1["ca-key.pem"]);
  assert.equal(f1["ca.crt"], f1["root-cert.pem"]);

  // A re-run job while the intermediate is fresh changes nothing.
  const again = await syncCaCerts({ source, sink, tlsLayout: true, renewAt, log: quiet });
  assert.equal(again.action, "kept");
  assert.equal(again.write, "unchanged");
  assert.equal((await secret())!.metadata.resourceVersion, s1.metadata.resourceVersion);

  // Dropping --tls-layout removes the tls.* keys (istiod would prefer them) but keeps the CA.
  const plain = await syncCaCerts({ source, sink, tlsLayout: false, renewAt, log: quiet });
  assert.equal(plain.write, "updated");
  const f2 = decode((await secret())!);
  assert.equal(f2["tls.crt"], undefined);
  assert.equal(f2["ca-cert.pem"], f1["ca-cert.pem"]);

  // Long-running: renewed before the 8 s lifetime ends.
  const log = recordingLog();
  const runner = runCaCerts({ source, sink, renewAt, log, retryMinMs: 200 });
  try {
    await runner.ready;
    const deadline = Date.now() + 15_000;
    let renewed: Record<string, string> | undefined;
    while (Date.now() < deadline) {
      const cur = decode((await secret())!);
      if (cur["ca-cert.pem"] !== f1["ca-cert.pem"]) {
        renewed = cur;
        break;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(renewed, "the intermediate was renewed");
    assertValidPluginCa(renewed);
    assert.equal(renewed["root-cert.pem"], f1["root-cert.pem"], "same root");
    assert.ok(runner.state()!.issued >= 1);
    // Each pass is logged with the sink, the source and the dates as fields.
    await waitFor("the renewal's log record", async () =>
      log.records.some((r) => r.msg === "new intermediate"),
    );
    const renewal = log.records.find((r) => r.msg === "new intermediate")!;
    assert.equal(renewal.obj.sink, sink.description);
    assert.equal(renewal.obj.source, source.description);
    assert.equal(typeof renewal.obj.notAfter, "string");
  } finally {
    await runner.stop();
  }
});

test("--out-dir --once (init container): files 0600/0644, atomic ..data swap, no Secret written", async () => {
  const out = join(dir, "etc-cacerts");
  const flags = {
    source: "local",
    dataDir: join(dir, "local2"),
    namespace: "istio-system",
    secretName: "cacerts-outdir-test",
    outDir: out,
    once: true,
    ttl: "1h",
    kubeconfig: kube.kubeconfigPath,
    logLevel: "silent",
  };
  await runCaCertsCommand(flags);
  const files: Record<string, string> = {};
  for (const f of ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]) {
    files[f] = readFileSync(join(out, f), "utf8");
    assert.ok(lstatSync(join(out, f)).isSymbolicLink(), `${f} goes through ..data`);
  }
  assertValidPluginCa(files);
  assert.equal(statSync(join(out, "ca-key.pem")).mode & 0o777, 0o600);
  assert.equal(statSync(join(out, "ca-cert.pem")).mode & 0o777, 0o644);
  assert.equal(await secret("cacerts-outdir-test"), undefined, "nothing written to a Secret");

  // The sidecar starting next to it keeps what the init container wrote.
  const kept = await syncCaCerts({
    source: new LocalIntermediateSource({
      dataDir: join(dir, "local2"),
      trustDomain: "cluster.local",
      ttlSeconds: 3600,
    }),
    sink: new DirSink(out),
    log: quiet,
  });
  assert.equal(kept.action, "kept");
  assert.equal(kept.write, "unchanged");
});

async function setupVaultPki(client: VaultClient): Promise<string> {
  await client.write("sys/mounts/pki", { type: "pki", config: { max_lease_ttl: "87600h" } });
  await client.write("sys/mounts/pki_int", { type: "pki", config: { max_lease_ttl: "43800h" } });
  const r = await client.write<{ certificate: string }>("pki/root/generate/internal", {
    common_name: "my-org-rootca",
    ttl: "8760h",
  });
  return r!.data!.certificate;
}

test("Vault source (real OpenBao): csr and exported modes into the Secret", async () => {
  const client = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  try {
    const rootPem = await setupVaultPki(client);
    const sink = new SecretSink({
      kubeConfig: loadKubeConfig({ kubeconfig: kube.kubeconfigPath }),
      name: "cacerts-vault",
    });
    for (const mode of ["csr", "exported"] as const) {
      const source = new VaultIntermediateSource({
        client,
        trustDomain: "cluster.local",
        mode,
        rootMount: "pki",
        intermediateMount: "pki_int",
        ttlSeconds: 720 * 3600,
        keyAlgorithm: "ec-p256",
      });
      const issued = await source.issueIntermediate();
      await sink.write({
        "ca-cert.pem": issued.caCertPem,
        "ca-key.pem": issued.caKeyPem,
        "cert-chain.pem": issued.certChainPem,
        "root-cert.pem": issued.rootCertPem,
      });
      const files = decode((await secret("cacerts-vault"))!);
      assertValidPluginCa(files);
      assert.equal(files["root-cert.pem"]!.trim(), rootPem.trim(), `${mode}: root-cert.pem is Vault's root`);
      const ca = parseCertificate(files["ca-cert.pem"]!);
      assert.equal(ca.pathLen, 0);
      assert.ok(ca.notAfter.getTime() - Date.now() > 700 * 3600 * 1000, `${mode}: 720h asked`);
    }
  } finally {
    client.close();
  }
});

test("--source vault with a mistyped --root-mount: exits non-zero naming the mount and the flag (not a missing policy), nothing written", async () => {
  const env = { PATH: process.env.PATH, HOME: dir, VAULT_ADDR: bao.addr, VAULT_TOKEN: bao.rootToken };
  const out = join(dir, "etc-cacerts-wrong-mount");
  const r = await cli(
    [
      "cacerts",
      "--source",
      "vault",
      "--root-mount",
      "pki-typo",
      "--out-dir",
      out,
      "--once",
      "--log-level",
      "warn",
    ],
    env,
  );
  assert.notEqual(r.code, 0, r.out);
  assert.match(r.err, /no PKI secrets engine is mounted at "pki-typo" \(--root-mount/);
  assert.doesNotMatch(r.err, /capabilit/, "not reported as a missing policy");
  assert.equal(existsSync(join(out, "ca-cert.pem")), false);
});

test("--source vault-kv --once (seed 001's shape): the self-signed CA pair in KV becomes the plug-in CA (directory, Secret); a mismatched pair or a bad reference is refused, nothing written", async () => {
  const client = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  const env = { PATH: process.env.PATH, HOME: dir, VAULT_ADDR: bao.addr, VAULT_TOKEN: bao.rootToken };
  const ca = (name: string): { certificate: string; privateKey: string } => {
    const [cert, key] = [join(dir, `${name}.pem`), join(dir, `${name}-key.pem`)];
    opensslSelfSigned({
      keyArgs: EC_P256_KEY,
      days: 30,
      subj: `/O=meshvault-test/CN=${name}`,
      cert,
      key,
      extra: [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
      ],
    });
    return { certificate: readFileSync(cert, "utf8"), privateKey: readFileSync(key, "utf8") };
  };
  try {
    // `vault kv put secret/pki/istiod privateKey=@vault-ca.key certificate=@vault-ca.crt`, as the guide does.
    const first = ca("kv-ca-1");
    await client.write("secret/data/pki/istiod", { data: first });
    const out = join(dir, "etc-cacerts-kv");
    const args = ["cacerts", "--source", "vault-kv", "--out-dir", out, "--once", "--log-level", "warn"];
    const ok = await cli(args, env);
    assert.equal(ok.code, 0, `${ok.out}\n${ok.err}`);
    const files: Record<string, string> = {};
    for (const f of ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"])
      files[f] = readFileSync(join(out, f), "utf8");
    assertValidPluginCa(files);
    assert.equal(files["ca-cert.pem"]!.trim(), first.certificate.trim());
    assert.equal(
      files["root-cert.pem"]!.trim(),
      first.certificate.trim(),
      "a self-signed CA is its own root",
    );
    // The same into Secret istio-system/cacerts (seed 002's place for it).
    const toSecret = ["cacerts", "--source", "vault-kv", "--once", "--secret-name", "cacerts-kv"];
    const sec = await cli([...toSecret, "--kubeconfig", kube.kubeconfigPath, "--log-level", "warn"], env);
    assert.equal(sec.code, 0, `${sec.out}\n${sec.err}`);
    assert.deepEqual(decode((await secret("cacerts-kv"))!), files);

    // Another CA's certificate with the first key: refused with the reason, the files stay.
    await client.write("secret/data/pki/istiod", {
      data: { ...ca("kv-ca-2"), privateKey: first.privateKey },
    });
    const bad = await cli(args, env);
    assert.notEqual(bad.code, 0);
    assert.match(bad.err, /does not match/);
    assert.equal(readFileSync(join(out, "ca-cert.pem"), "utf8"), files["ca-cert.pem"]);

    const badRef = await cli([...args, "--kv-certificate", "secret/data/pki/istiod#certificate"], env);
    assert.notEqual(badRef.code, 0);
    assert.match(badRef.err, /secret\/data\/pki\/istiod#certificate.*must start with "vault:"/);
  } finally {
    client.close();
  }
});
