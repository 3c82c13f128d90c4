// Rotation state in a ConfigMap (`rotation.state: kube:<namespace>/<name>`) on a REAL
// kube-apiserver: one `meshvault root rotate` process starts a rotation, another continues it to
// the end, the server follows the phases from the ConfigMap; two operators advancing the same
// phase at once: the second is refused (resourceVersion) and says what the state holds now, both
// through the operators and in the store scenario the file and KV v2 stores pass too.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { loadKubeConfig } from "../../src/kube/client.js";
import { loadServerConfig } from "../../src/config/load.js";
import { RotationOperator } from "../../src/rotation/operator.js";
import { kubeRotationStore } from "../../src/rotation/kube-state.js";
import { cli } from "../helpers/cli.js";
import { startKube, type KubeEnv } from "../helpers/kube.js";
import { startServerProcess, type ServerProcess } from "../helpers/server-process.js";
import { waitFor } from "../helpers/wait.js";
import { CLI_MS, rootStatus, serversApply } from "./drive.js";
import { twoOperatorsAdvanceTheSamePhase } from "./state-fixture.js";

const REF = "istio-system/meshvault-root-rotation";
let dir: string;
let kube: KubeEnv;
let server: ServerProcess | undefined;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshvault-kube-state-"));
  kube = await startKube();
  await kube.createNamespace("istio-system");
});
after(async () => {
  await server?.stop();
  await kube?.stop();
  rmSync(dir, { recursive: true, force: true });
});

interface StateCm {
  metadata: { resourceVersion: string };
  data: { state: string };
}

async function stateCm(): Promise<{ phase: string; id: string } | undefined> {
  const r = await kube.request(
    "GET",
    `/api/v1/namespaces/istio-system/configmaps/meshvault-root-rotation`,
    undefined,
    {
      expectOk: false,
    },
  );
  return r.status === 200
    ? (JSON.parse((r.body as StateCm).data.state) as { phase: string; id: string })
    : undefined;
}

test("a rotation kept in a ConfigMap: started by one root rotate process, finished by another; a concurrent advance is refused", async () => {
  const env = { ...process.env, KUBECONFIG: kube.kubeconfigPath };
  server = await startServerProcess(
    "kube-state",
    dir,
    {
      authority: { type: "local" },
      certificates: { defaultTtl: "10s", maxTtl: "10s" },
      servingCertificate: { ttl: "1h" },
      rotation: { state: `kube:${REF}`, pollInterval: "1s" },
    },
    { KUBECONFIG: kube.kubeconfigPath },
  );
  const args = ["-c", server.configFile, "--server", `http://${server.http}`];

  // Operator 1 (a process): prepare. The state is in the cluster, not in the data directory.
  const first = await cli(["root", "rotate", ...args], env, CLI_MS);
  assert.equal(first.code, 0, first.out + first.err);
  assert.match(first.out, /prepared rotation r-/);
  const prepared = await stateCm();
  assert.equal(prepared?.phase, "prepared");
  assert.equal(existsSync(join(server.dataDir, "root-rotation.json")), false);
  const status = await rootStatus(args, env);
  assert.equal(status.state?.id, prepared.id);
  await serversApply([server], "prepared");

  // Two operators observe the same "prepared" state (nothing blocks trust-both), then both advance.
  const config = loadServerConfig({ file: server.configFile, env: {} });
  const kc = () => loadKubeConfig({ kubeconfig: kube.kubeconfigPath });
  const operator = () =>
    new RotationOperator({
      config,
      store: kubeRotationStore(kc(), REF),
      servers: [`http://${server!.http}`],
      checks: [],
    });
  const [a, b] = [operator(), operator()];
  const obsA = await waitFor("trust-both unblocked", async () => {
    const o = await a.observe();
    return o.blockers.length === 0 && o;
  });
  const obsB = await b.observe();
  assert.equal(obsB.next, "trust-both");
  assert.deepEqual(obsB.blockers, []);
  const did = await a.step(obsA, false);
  assert.match(did.join("\n"), /trust both/);
  await assert.rejects(b.step(obsB, false), (err: Error) => {
    assert.equal(err.name, "RotationStateError");
    assert.match(
      err.message,
      /rotation state kube:istio-system\/meshvault-root-rotation changed since it was read/,
    );
    assert.match(err.message, new RegExp(`holds rotation ${prepared.id} at phase trust-both`));
    assert.match(err.message, /meshvault root status/);
    return true;
  });
  assert.equal((await stateCm())?.phase, "trust-both", "the refused step changed nothing");

  // Operator 2 (another process, another copy of the configuration): continues to the end.
  const copy = join(dir, "operator-2.yaml");
  copyFileSync(server.configFile, copy);
  const second = await cli(
    [
      "root",
      "rotate",
      "-c",
      copy,
      "--server",
      `http://${server.http}`,
      "--until",
      "retired",
      "--interval",
      "500ms",
    ],
    env,
    CLI_MS,
  );
  assert.equal(second.code, 0, second.out + second.err);
  assert.match(second.out, /: switch:/);
  assert.match(second.out, /: retire:/);
  assert.equal((await stateCm())?.phase, "retired");
  await serversApply([server], "retired");
  const done = await rootStatus(args, env);
  assert.equal(done.next, "done");
  await waitFor("the server publishing the new root alone", async () => {
    const s = await rootStatus(args, env);
    return s.channels.every((c) => c.holds === "new");
  });
});

test("ConfigMap: two operators advance the same phase at once: the second is refused and the ConfigMap keeps the first step", async () => {
  const ref = "istio-system/meshvault-root-rotation-concurrent";
  await twoOperatorsAdvanceTheSamePhase({
    open: () => kubeRotationStore(loadKubeConfig({ kubeconfig: kube.kubeconfigPath }), ref),
    authority: "local",
    where: `kube:${ref}`,
  });
});

test("rotation.state kube: with a bad name is a configuration error naming the field and the fix", () => {
  const file = join(dir, "bad.yaml");
  writeFileSync(file, stringify({ rotation: { state: "kube:Istio_System/x" } }));
  assert.throws(
    () => loadServerConfig({ file, env: {} }),
    /rotation\.state[\s\S]*"kube:Istio_System\/x": namespace "Istio_System" is not a DNS-1123 label/,
  );
});
