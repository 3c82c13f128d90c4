// Replicas (issue 10 §4) as users run them: `meshvault server` processes on one real OpenBao.
// vault-intermediate exported (each replica its own intermediate under the shared root) and
// vault-kv (every replica the same CA) publish identical bundles and pass `meshvault verify`
// (the CLI, issuing a test leaf from each replica and checking it under the other's bundle).
// With a `kubernetes:` section on a real kube-apiserver, the root ConfigMaps follow a rotation
// old -> old+new -> new written by the Lease holder alone, and when it stops the other replica
// takes the Lease and publishes the rest. (csr mode: test/rotation/root-rotation.test.ts.)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseCertificates } from "../../src/pki/certificate.js";
import type { Overview } from "../../src/server/overview.js";
import { VaultClient } from "../../src/vault/index.js";
import { cli } from "../helpers/cli.js";
import { writeLocalToken } from "../helpers/local-token.js";
import { startKube, type KubeEnv } from "../helpers/kube.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { startServerProcess, type ServerProcess } from "../helpers/server-process.js";
import { waitFor } from "../helpers/wait.js";
import { CLI_MS, mountRoot, rootStatus, serversApply, storeKvCa } from "./drive.js";

let dir: string;
let bao: OpenBao;
let kube: KubeEnv;
let admin: VaultClient;
const running: ServerProcess[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshvault-replicas-"));
  [bao, kube] = await Promise.all([startOpenBao(), startKube()]);
  for (const ns of ["istio-system", "app-a", "app-b"]) await kube.createNamespace(ns);
  await mountRoot(bao, "replicas mesh root");
  admin = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
});
after(async () => {
  await Promise.all(running.map((s) => s.stop()));
  admin?.close();
  await Promise.all([bao?.stop(), kube?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

async function replicas(
  names: string[],
  config: Record<string, unknown>,
  env: (name: string) => Record<string, string> = () => ({}),
): Promise<ServerProcess[]> {
  const started = await Promise.all(
    names.map((n) =>
      startServerProcess(
        n,
        dir,
        { vault: { address: bao.addr, auth: { method: "token" } }, ...config },
        {
          VAULT_TOKEN: bao.rootToken,
          ...env(n),
        },
      ),
    ),
  );
  running.push(...started);
  return started;
}

/** `meshvault verify` source for a replica: its /roots, and a test leaf issued through its gRPC API. */
async function caSource(s: ServerProcess): Promise<string> {
  const token = await writeLocalToken(join(dir, `${s.name}.token`), s.dataDir, {
    serviceAccount: "verify",
    ttlSeconds: 600,
  });
  return `${s.name}=ca:http://${s.http},grpc=${s.grpc},token=${token}`;
}

const rootsOf = async (s: ServerProcess): Promise<string> => (await fetch(`http://${s.http}/roots`)).text();

async function identicalAndVerified(
  servers: ServerProcess[],
  intermediates: "distinct" | "same",
): Promise<void> {
  const roots = await Promise.all(servers.map(rootsOf));
  assert.ok(roots[0]!.includes("BEGIN CERTIFICATE"));
  for (const r of roots) assert.equal(r, roots[0], "replicas publish identical bundles");
  // Who signs: each replica its own intermediate (exported), or all the same CA (kv).
  const signers = await Promise.all(
    servers.map(async (s) => {
      const o = (await (await fetch(`http://${s.http}/overview`)).json()) as Overview;
      return o.chain.intermediates.map((c) => c.fingerprint).join(",");
    }),
  );
  assert.equal(new Set(signers).size, intermediates === "same" ? 1 : servers.length, signers.join(" / "));
  const v = await cli(["verify", ...(await Promise.all(servers.map(caSource)))], { ...process.env }, CLI_MS);
  assert.equal(v.code, 0, v.out + v.err);
  assert.match(v.out, /all sources trust each other/);
}

test("vault-intermediate exported, two replicas on one OpenBao: identical bundles, meshvault verify passes", async () => {
  await admin.write("sys/mounts/pki_int", { type: "pki", config: { max_lease_ttl: "8760h" } });
  const servers = await replicas(["exp-a", "exp-b"], {
    authority: {
      type: "vault-intermediate",
      mode: "exported",
      rootMount: "pki",
      intermediateMount: "pki_int",
      ttl: "2h",
    },
  });
  await identicalAndVerified(servers, "distinct");
});

test("vault-kv, two replicas on one OpenBao: the same CA, identical bundles, meshvault verify passes", async () => {
  await storeKvCa(admin, "vault:secret/data/replicas/ca", {
    rootMount: "pki",
    keyMount: "pki_kv",
    commonName: "replicas kv CA",
  });
  const servers = await replicas(["kv-a", "kv-b"], {
    authority: {
      type: "vault-kv",
      certificate: "vault:secret/data/replicas/ca#certificate",
      privateKey: "vault:secret/data/replicas/ca#privateKey",
      root: "vault:secret/data/replicas/ca#root",
    },
  });
  await identicalAndVerified(servers, "same");
});

interface Cm {
  metadata: { namespace: string; annotations?: Record<string, string> };
  data?: Record<string, string>;
}

const fps = (pem: string): string[] =>
  parseCertificates(pem)
    .map((c) => new X509Certificate(c.pem).fingerprint256)
    .sort();

/** Every root ConfigMap, when all hold exactly `roots` (fingerprints): their writers. */
async function configMapsHold(roots: string[]): Promise<Set<string> | undefined> {
  const r = await kube.request("GET", "/api/v1/configmaps?fieldSelector=metadata.name%3Distio-ca-root-cert");
  const items = (r.body as { items: Cm[] }).items;
  // istio-system, app-a, app-b, default, kube-system, kube-public, kube-node-lease
  if (items.length < 7) return undefined;
  const want = [...roots].sort().join(",");
  if (!items.every((cm) => fps(cm.data?.["root-cert.pem"] ?? "").join(",") === want)) return undefined;
  return new Set(items.map((cm) => cm.metadata.annotations?.["meshvault.io/written-by"] ?? "(none)"));
}

async function leaseHolder(): Promise<string | undefined> {
  const r = await kube.request(
    "GET",
    "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases/meshvault-root-publisher",
    undefined,
    { expectOk: false },
  );
  return r.status === 200
    ? (r.body as { spec?: { holderIdentity?: string } }).spec?.holderIdentity || undefined
    : undefined;
}

test("kubernetes section, two replicas, a root rotation: one Lease holder writes the ConfigMaps old -> old+new -> new; the other takes over when it stops", async () => {
  await mountRoot(bao, "lease mesh root", "pki_rot");
  const env = { ...process.env, VAULT_TOKEN: bao.rootToken, KUBECONFIG: kube.kubeconfigPath };
  const servers = await replicas(
    ["lease-a", "lease-b"],
    {
      authority: { type: "vault-intermediate", mode: "csr", rootMount: "pki_rot", ttl: "1h" },
      certificates: { defaultTtl: "10s", maxTtl: "10s" },
      servingCertificate: { ttl: "1h" },
      rotation: { state: "kube:istio-system/meshvault-root-rotation", pollInterval: "1s" },
      kubernetes: {
        kubeconfig: kube.kubeconfigPath,
        namespace: "istio-system",
        tokenReview: { enabled: false },
        rootPublisher: { leaseDuration: "3s", renewPeriod: "1s", overlap: "2s" },
      },
    },
    (n) => ({ POD_NAME: n }),
  );
  const byIdentity = (id: string): ServerProcess => servers.find((s) => id.startsWith(`${s.name}_`))!;
  const holder = await waitFor("a Lease holder", leaseHolder);
  const leader = byIdentity(holder);
  const standby = servers.find((s) => s !== leader)!;
  const old = fps(await rootsOf(leader));
  assert.equal(old.length, 1);
  assert.deepEqual(
    [...(await waitFor("ConfigMaps holding the old root", () => configMapsHold(old)))],
    [holder],
  );

  // Both replicas running: prepare, trust both. The ConfigMaps move to old + new, by the holder alone.
  const args = ["-c", leader.configFile, ...servers.flatMap((s) => ["--server", `http://${s.http}`])];
  const toTrust = await cli(
    ["root", "rotate", ...args, "--until", "trust-both", "--interval", "500ms"],
    env,
    CLI_MS,
  );
  assert.equal(toTrust.code, 0, toTrust.out + toTrust.err);
  await serversApply(servers, "trust-both");
  const state = (await rootStatus(args, env)).state!;
  const both = [state.old.fingerprint, state.next.fingerprint];
  assert.deepEqual(old, [state.old.fingerprint]);
  assert.deepEqual(
    [...(await waitFor("ConfigMaps holding old + new", () => configMapsHold(both)))],
    [holder],
  );
  assert.equal(await leaseHolder(), holder, "one holder throughout");
  assert.equal(await rootsOf(leader), await rootsOf(standby), "replicas publish identical bundles");

  // The holder stops (releasing the Lease): the other replica takes it, and the rotation ends
  // with the ConfigMaps holding the new root alone, written by the new holder.
  await leader.stop();
  const next = await waitFor("the standby taking the Lease", async () => {
    const h = await leaseHolder();
    return h && h !== holder && h;
  });
  assert.equal(byIdentity(next), standby);
  const rest = ["-c", standby.configFile, "--server", `http://${standby.http}`];
  const toEnd = await cli(
    ["root", "rotate", ...rest, "--until", "retired", "--interval", "500ms"],
    env,
    CLI_MS,
  );
  assert.equal(toEnd.code, 0, toEnd.out + toEnd.err);
  await serversApply([standby], "retired");
  assert.deepEqual(
    [
      ...(await waitFor(
        "ConfigMaps holding the new root alone",
        () => configMapsHold([state.next.fingerprint]),
        60_000,
      )),
    ],
    [next],
  );
  const v = await cli(
    // Roots only: a test leaf would ask for longer than this server's 10 s maxTtl.
    [
      "verify",
      `${standby.name}=ca:http://${standby.http}`,
      `cluster=kube:,kubeconfig=${kube.kubeconfigPath}`,
    ],
    env,
    CLI_MS,
  );
  assert.equal(v.code, 0, v.out + v.err);
});
