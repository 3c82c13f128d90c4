// istiod's serving certificate (Secret istiod-tls) against a REAL kube-apiserver: the
// Secret appears with istiod's DNS names and SPIFFE ID, openssl verifies it as a TLS
// server certificate chaining to ca.crt, the key matches, nothing is rewritten while it
// is fresh, it is renewed with a short TTL, repaired after an edit or deletion, and only
// the Lease holder writes.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalAuthority } from "../../src/authority/local.js";
import { loadKubeConfig } from "../../src/kube/client.js";
import { loadServerConfig } from "../../src/config/load.js";
import {
  DEFAULT_ISTIOD_DNS_NAMES,
  startIstiodCertWriter,
  type IstiodCertHandle,
  type IstiodCertServiceOptions,
} from "../../src/kube/istiod-cert.js";
import { parseCertificates } from "../../src/pki/certificate.js";
import { openssl, opensslVerify } from "../helpers/openssl.js";
import { startKube, type KubeEnv } from "../helpers/kube.js";
import { recordingLog } from "../helpers/recording-log.js";
import { waitFor } from "../helpers/wait.js";

const NS = "istio-system";
let kube: KubeEnv;
let dir: string;
let authority: LocalAuthority;
const handles: IstiodCertHandle[] = [];
const quiet = recordingLog({ echo: !!process.env.DEBUG_KUBE });

interface SecretBody {
  metadata: { resourceVersion: string; labels?: Record<string, string> };
  type?: string;
  data?: Record<string, string>;
}

async function secret(name = "istiod-tls"): Promise<SecretBody | undefined> {
  const r = await kube.request("GET", `/api/v1/namespaces/${NS}/secrets/${name}`, undefined, {
    expectOk: false,
  });
  return r.status === 200 ? (r.body as SecretBody) : undefined;
}

const decode = (s: SecretBody): Record<string, string> =>
  Object.fromEntries(
    Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
  );

async function writer(
  identity: string,
  extra: Partial<IstiodCertServiceOptions> = {},
): Promise<IstiodCertHandle> {
  const h = await startIstiodCertWriter({
    kubeConfig: loadKubeConfig({ kubeconfig: kube.kubeconfigPath }),
    authority,
    trustDomain: "cluster.local",
    namespace: NS,
    serviceAccount: "istiod",
    dnsNames: [...DEFAULT_ISTIOD_DNS_NAMES],
    ttlSeconds: 86400,
    checkPeriodMs: 300,
    retryMinMs: 200,
    leaseNamespace: NS,
    identity,
    leaseDurationSeconds: 3,
    renewPeriodMs: 300,
    log: quiet,
    ...extra,
  });
  handles.push(h);
  return h;
}

async function closeAll(): Promise<void> {
  while (handles.length) await handles.pop()!.close();
}

/** Independent checks with openssl: server purpose, chain to ca.crt, key matches, SANs. */
function assertValidIstiodTls(s: SecretBody, dnsNames: readonly string[]): void {
  assert.equal(s.type, "kubernetes.io/tls");
  assert.equal(s.metadata.labels?.["app.kubernetes.io/managed-by"], "meshvault");
  const f = decode(s);
  for (const k of ["tls.crt", "tls.key", "ca.crt"]) assert.ok(f[k], `${k} present`);
  assert.equal(f["ca.crt"], authority.trustBundle().join(""), "ca.crt is the trust bundle");
  const [leaf, ...intermediates] = parseCertificates(f["tls.crt"]!);
  assert.ok(leaf);
  assert.ok(intermediates.length >= 1, "tls.crt carries the intermediates");
  assert.deepEqual([...leaf.sans.dnsNames].sort(), [...dnsNames].sort());
  assert.deepEqual(leaf.sans.uris, ["spiffe://cluster.local/ns/istio-system/sa/istiod"]);
  const [ok, out] = opensslVerify(
    f["ca.crt"]!,
    intermediates.map((c) => c.pem).join(""),
    leaf.pem,
    "sslserver",
  );
  assert.ok(ok, out);
  const certPub = openssl(["x509", "-noout", "-pubkey"], leaf.pem);
  const keyPub = openssl(["pkey", "-pubout"], f["tls.key"]!);
  assert.equal(certPub, keyPub, "tls.key matches tls.crt");
}

before(async () => {
  kube = await startKube();
  await kube.createNamespace(NS);
  dir = mkdtempSync(join(tmpdir(), "meshvault-istiod-cert-"));
  authority = new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local" });
  await authority.start();
});

after(async () => {
  await closeAll().catch(() => {});
  await authority?.close();
  await kube?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("config: kubernetes.istiodCertificate defaults and strictness", () => {
  const base = { trustDomain: "cluster.local", authority: { type: "local" } };
  const c = loadServerConfig({ env: {}, overrides: { ...base, kubernetes: {} } });
  assert.deepEqual(c.kubernetes?.istiodCertificate, {
    enabled: false,
    namespace: "istio-system",
    secretName: "istiod-tls",
    serviceAccount: "istiod",
    dnsNames: [
      "istiod.istio-system.svc",
      "istiod.istio-system.svc.cluster.local",
      "istio-pilot.istio-system.svc",
    ],
    ttl: 86400,
    leaseName: "meshvault-istiod-cert",
    checkPeriod: 30,
  });
  const set = loadServerConfig({
    env: {},
    overrides: {
      ...base,
      kubernetes: { istiodCertificate: { enabled: true, ttl: "2h", dnsNames: ["a.b.svc"] } },
    },
  });
  assert.equal(set.kubernetes?.istiodCertificate.ttl, 7200);
  assert.deepEqual(set.kubernetes?.istiodCertificate.dnsNames, ["a.b.svc"]);
  assert.throws(() =>
    loadServerConfig({ env: {}, overrides: { ...base, kubernetes: { istiodCertificate: { bogus: 1 } } } }),
  );
  assert.throws(() =>
    loadServerConfig({ env: {}, overrides: { ...base, kubernetes: { istiodCertificate: { ttl: "0s" } } } }),
  );
});

test("a replica that does not hold the Lease writes nothing", async () => {
  // Someone else holds the lease (renewed by us below, so it never looks expired).
  const lease = {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: { name: "meshvault-istiod-cert", namespace: NS },
    spec: {
      holderIdentity: "other-replica",
      leaseDurationSeconds: 3600,
      renewTime: new Date().toISOString().replace("Z", "000Z") /* MicroTime */,
    },
  };
  await kube.request("POST", `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`, lease);
  const h = await writer("standby");
  // Each lease attempt was a chance to take over and write: let a few pass, then look.
  const attempts = h.leaseAttempts();
  await waitFor("three more lease attempts by the standby", async () => h.leaseAttempts() >= attempts + 3);
  assert.equal(h.isLeader(), false);
  assert.equal(h.stats().issued, 0);
  assert.equal(await secret(), undefined, "a standby replica created istiod-tls");
  await closeAll();
  await kube.request("DELETE", `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/meshvault-istiod-cert`);
});

test("Secret istiod-tls: valid, kept while fresh, repaired after edit and deletion; one writer of two", async () => {
  const a = await writer("replica-a");
  const b = await writer("replica-b");
  const leader = await waitFor("a leader", async () => (a.isLeader() ? a : b.isLeader() ? b : undefined));
  const standby = leader === a ? b : a;
  const s1 = await waitFor("istiod-tls", () => secret());
  assertValidIstiodTls(s1, DEFAULT_ISTIOD_DNS_NAMES);

  // Fresh: several check passes find it so and rewrite nothing.
  const checked = leader.stats().unchanged;
  await waitFor("three more check passes", async () => leader.stats().unchanged >= checked + 3);
  const s2 = (await secret())!;
  assert.equal(s2.metadata.resourceVersion, s1.metadata.resourceVersion, "rewritten while fresh");
  assert.equal(leader.stats().issued, 1);
  assert.equal(standby.stats().issued + standby.stats().created + standby.stats().updated, 0);

  // Edited (a wrong key): replaced by a new, valid certificate.
  const edited = structuredClone(s2);
  edited.data!["tls.key"] = Buffer.from(
    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
  ).toString("base64");
  await kube.request("PUT", `/api/v1/namespaces/${NS}/secrets/istiod-tls`, edited);
  const s3 = await waitFor("repair after edit", async () => {
    const s = await secret();
    return s && decode(s)["tls.crt"] !== decode(s1)["tls.crt"] ? s : undefined;
  });
  assertValidIstiodTls(s3, DEFAULT_ISTIOD_DNS_NAMES);

  // ca.crt edited alone: put back without a new certificate.
  const caEdited = structuredClone(s3);
  caEdited.data!["ca.crt"] = Buffer.from("nonsense").toString("base64");
  await kube.request("PUT", `/api/v1/namespaces/${NS}/secrets/istiod-tls`, caEdited);
  const s4 = await waitFor("ca.crt repaired", async () => {
    const s = await secret();
    return s && decode(s)["ca.crt"] === authority.trustBundle().join("") ? s : undefined;
  });
  assert.equal(decode(s4)["tls.crt"], decode(s3)["tls.crt"], "ca.crt repair reissued the certificate");

  // Deleted: recreated.
  await kube.request("DELETE", `/api/v1/namespaces/${NS}/secrets/istiod-tls`);
  const s5 = await waitFor("recreated after deletion", () => secret());
  assertValidIstiodTls(s5, DEFAULT_ISTIOD_DNS_NAMES);
  assert.equal(standby.stats().issued + standby.stats().created + standby.stats().updated, 0);

  // The leader goes away: the standby takes over and keeps the still-fresh certificate.
  const rv = s5.metadata.resourceVersion;
  await leader.close();
  handles.splice(handles.indexOf(leader), 1);
  await waitFor("standby takes over", async () => standby.isLeader() && standby.last());
  assert.equal(standby.last()?.action, "kept");
  assert.equal((await secret())!.metadata.resourceVersion, rv, "new leader rewrote a fresh certificate");
  await closeAll();
});

test("renewed at half life with a short TTL; configured DNS names and Secret name", async () => {
  try {
    const names = ["istiod-canary.istio-system.svc", "istiod.istio-system.svc"];
    const ttl = 8;
    const h = await writer("renewer", { ttlSeconds: ttl, dnsNames: names, secretName: "istiod-tls-canary" });
    const s1 = await waitFor("istiod-tls-canary", () => secret("istiod-tls-canary"));
    assertValidIstiodTls(s1, names);
    const first = parseCertificates(decode(s1)["tls.crt"]!)[0]!;
    // Issued at notAfter - ttl (notBefore is backdated 2 min); fresh until half of ttl has passed.
    const issuedAt = first.notAfter.getTime() - ttl * 1000;
    const s2 = await waitFor(
      "renewal",
      async () => {
        const s = await secret("istiod-tls-canary");
        return s && s.metadata.resourceVersion !== s1.metadata.resourceVersion ? s : undefined;
      },
      15_000,
    );
    assertValidIstiodTls(s2, names);
    const second = parseCertificates(decode(s2)["tls.crt"]!)[0]!;
    assert.notEqual(second.serialHex, first.serialHex);
    // Judged from the certificates' own times, not from when this test got to look: the first
    // change to the Secret came no sooner than half life (1 s of slack for whole-second times),
    // and before the first certificate expired.
    const renewedAt = second.notAfter.getTime() - ttl * 1000;
    assert.ok(renewedAt >= issuedAt + (ttl * 1000) / 2 - 1000, "not rewritten while still fresh");
    assert.ok(renewedAt < first.notAfter.getTime(), "renewed before the first certificate expired");
    assert.ok(h.stats().issued >= 2);
  } finally {
    await closeAll();
  }
});

test("a Secret of another type is reported, not fought over", async () => {
  await kube.request("POST", `/api/v1/namespaces/${NS}/secrets`, {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: "istiod-tls-opaque" },
    type: "Opaque",
    stringData: { x: "y" },
  });
  const log = recordingLog();
  // The failure's reason, from the renewal loop's log record.
  const warnings = (): string[] => log.records.map((r) => String(r.obj.err ?? ""));
  try {
    const h = await writer("typed", { secretName: "istiod-tls-opaque", log });
    await waitFor("a warning", async () => warnings().some((w) => w.includes("type Opaque")));
    assert.equal(h.stats().issued, 0);
    assert.match(
      warnings().find((w) => w.includes("type Opaque"))!,
      /delete secret istiod-tls-opaque/,
    );
  } finally {
    await closeAll();
  }
});
