// `meshvault verify` reading a real kube-apiserver: the istio-ca-root-cert ConfigMaps of
// chosen namespaces and the cacerts Secret, one namespace deliberately behind.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { VerifyReport } from "../../src/verify/matrix.js";
import { cli } from "../helpers/cli.js";
import { startKube, type KubeEnv } from "../helpers/kube.js";
import { makeTestCa } from "../helpers/pki-fixtures.js";

let kube: KubeEnv;
let dir: string;
const current = makeTestCa();
const stale = makeTestCa();

const configMap = (ns: string, pem: string) => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  metadata: { name: "istio-ca-root-cert", namespace: ns },
  data: { "root-cert.pem": pem },
});

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshvault-verify-kube-"));
  kube = await startKube();
  for (const ns of ["istio-system", "app", "legacy"]) await kube.createNamespace(ns);
  await kube.request("POST", "/api/v1/namespaces/app/configmaps", configMap("app", current.root.pem));
  await kube.request("POST", "/api/v1/namespaces/legacy/configmaps", configMap("legacy", stale.root.pem));
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  await kube.request("POST", "/api/v1/namespaces/istio-system/secrets", {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: "cacerts", namespace: "istio-system" },
    data: {
      "ca-cert.pem": b64(current.intermediate.pem),
      "cert-chain.pem": b64(current.intermediate.pem + current.root.pem),
      "root-cert.pem": b64(current.root.pem),
    },
  });
  writeFileSync(join(dir, "root.pem"), current.root.pem);
});

after(async () => {
  await kube?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("ConfigMaps and cacerts that agree with the file: exit 0; cacerts' intermediate is the cluster's sample", async () => {
  const r = await cli(
    ["verify", `cluster=kube:,kubeconfig=${kube.kubeconfigPath},ns=app`, `file=${join(dir, "root.pem")}`],
    process.env,
    120_000,
  );
  assert.equal(r.code, 0, r.out + r.err);
  assert.match(r.out, /configmap app\/istio-ca-root-cert:/);
  assert.match(r.out, /secret istio-system\/cacerts root-cert\.pem:/);
  assert.match(r.out, /sample secret istio-system\/cacerts ca-cert\.pem: O=test, CN=test intermediate/);
});

test("a namespace whose ConfigMap holds another root is named, with the fix", async () => {
  const r = await cli(
    [
      "verify",
      "-o",
      "json",
      `cluster=kube:,kubeconfig=${kube.kubeconfigPath}`,
      `file=${join(dir, "root.pem")}`,
    ],
    process.env,
    120_000,
  );
  assert.equal(r.code, 1, r.out + r.err);
  const report = JSON.parse(r.out) as VerifyReport;
  const cluster = report.sources.find((s) => s.name === "cluster")!;
  assert.deepEqual(cluster.channels.map((c) => c.name).sort(), [
    "configmap app/istio-ca-root-cert",
    "configmap legacy/istio-ca-root-cert",
    "secret istio-system/cacerts root-cert.pem",
  ]);
  assert.ok(
    report.differences.some((d) =>
      /cluster configmap legacy\/istio-ca-root-cert lacks root O=test, CN=test root/.test(d),
    ),
    report.differences.join("\n"),
  );
  assert.ok(
    report.fixes.some((f) => /make configmap legacy\/istio-ca-root-cert publish the same bundle/.test(f)),
  );
});
