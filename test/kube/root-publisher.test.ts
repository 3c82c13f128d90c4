// Root-of-trust ConfigMaps against a REAL kube-apiserver: every namespace, new
// namespaces, repairs, no rewrites when equal, root rotation overlap, and two
// replicas behind one Lease.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { selfSignedRootPem } from "../helpers/pki-fixtures.js";
import { CoreV1Api, type V1ConfigMap } from "@kubernetes/client-node";
import { loadKubeConfig } from "../../src/kube/client.js";
import { listAndWatch } from "../../src/kube/list-watch.js";
import { startRootPublisher, type RootPublisherHandle } from "../../src/kube/root-publisher-service.js";
import { startKube, type KubeEnv } from "../helpers/kube.js";
import { recordingLog } from "../helpers/recording-log.js";
import { waitFor } from "../helpers/wait.js";

let kube: KubeEnv;
const handles: RootPublisherHandle[] = [];
const quiet = recordingLog({ echo: !!process.env.DEBUG_KUBE });

interface Cm {
  metadata: {
    resourceVersion: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  data?: Record<string, string>;
}

async function getCm(ns: string, name = "istio-ca-root-cert"): Promise<Cm | undefined> {
  const r = await kube.request("GET", `/api/v1/namespaces/${ns}/configmaps/${name}`, undefined, {
    expectOk: false,
  });
  return r.status === 200 ? (r.body as Cm) : undefined;
}

const hasBundle = (ns: string, pem: string, name?: string) => async () => {
  const cm = await getCm(ns, name);
  return cm?.data?.["root-cert.pem"] === pem && cm.metadata.labels?.["istio.io/config"] === "true"
    ? cm
    : undefined;
};

/** Changes a label on namespace `ns` (a MODIFIED event for the publisher's namespace watch). */
async function relabel(ns: string): Promise<void> {
  const cur = (await kube.request("GET", `/api/v1/namespaces/${ns}`)).body as {
    metadata: { labels?: Record<string, string> };
  };
  cur.metadata.labels = { ...cur.metadata.labels, "meshvault.test/relabelled": String(Date.now()) };
  await kube.request("PUT", `/api/v1/namespaces/${ns}`, cur);
}

/** Every distinct root-cert.pem the ConfigMap in `ns` holds from now on, in order, from a watch. */
function recordBundles(ns: string): { values: string[]; stop(): void } {
  const kubeConfig = loadKubeConfig({ kubeconfig: kube.kubeconfigPath });
  const api = kubeConfig.makeApiClient(CoreV1Api);
  const fieldSelector = "metadata.name=istio-ca-root-cert";
  const values: string[] = [];
  const push = (cm: V1ConfigMap): void => {
    const v = cm.data?.["root-cert.pem"];
    if (v !== undefined && values.at(-1) !== v) values.push(v);
  };
  const h = listAndWatch<V1ConfigMap>({
    kubeConfig,
    path: `/api/v1/namespaces/${ns}/configmaps`,
    selectors: { fieldSelector },
    list: () => api.listNamespacedConfigMap({ namespace: ns, fieldSelector }),
    onList: (items) => items.forEach(push),
    onEvent: (_type, cm) => push(cm),
  });
  return { values, stop: () => h.stop() };
}

let roots: string[];
const rootA = selfSignedRootPem("root A", 86400);

async function publisher(identity: string, extra: Partial<Parameters<typeof startRootPublisher>[0]> = {}) {
  const h = await startRootPublisher({
    kubeConfig: loadKubeConfig({ kubeconfig: kube.kubeconfigPath }),
    roots: () => roots,
    namespace: "istio-system",
    identity,
    leaseDurationSeconds: 3,
    renewPeriodMs: 500,
    rootsPollMs: 200,
    overlapSeconds: 4,
    log: quiet,
    ...extra,
  });
  handles.push(h);
  return h;
}

before(async () => {
  kube = await startKube();
  for (const ns of ["istio-system", "app-a", "app-b"]) await kube.createNamespace(ns);
  roots = [rootA];
});

after(async () => {
  for (const h of handles) await h.close().catch(() => {});
  await kube?.stop();
});

test("publishes, repairs, never rewrites when equal, rotates with overlap; two replicas share one Lease", async () => {
  const p1 = await publisher("replica-1");
  // Usually at once; a first attempt that hit a slow API server is retried a renew period later.
  await waitFor("replica-1 leads", async () => p1.isLeader());
  const p2 = await publisher("replica-2");
  assert.equal(p2.isLeader(), false, "the second replica stands by");

  // Existing namespaces, including the system ones.
  for (const ns of ["istio-system", "app-a", "app-b", "default", "kube-system"])
    await waitFor(`configmap in ${ns}`, hasBundle(ns, rootA));

  // A new namespace gets one.
  await kube.createNamespace("app-new");
  await waitFor("configmap in a new namespace", hasBundle("app-new", rootA));

  assert.equal((await getCm("app-a"))!.metadata.annotations?.["meshvault.io/written-by"], "replica-1");

  // Not rewritten when equal. Relabelling app-a and app-b makes the leader compare their
  // ConfigMaps again; a namespace created after that is served after them (one queue, in
  // order), so once its ConfigMap exists the comparisons are done and must have written nothing.
  const rv = (await getCm("app-a"))!.metadata.resourceVersion;
  const rvB = (await getCm("app-b"))!.metadata.resourceVersion;
  const compared = p1.stats().unchanged;
  for (const ns of ["app-a", "app-b"]) await relabel(ns);
  await kube.createNamespace("app-later");
  await waitFor("configmap in a namespace created after the relabels", hasBundle("app-later", rootA));
  assert.ok(p1.stats().unchanged >= compared + 2, "the leader compared app-a and app-b again");
  assert.equal((await getCm("app-a"))!.metadata.resourceVersion, rv);
  assert.equal((await getCm("app-b"))!.metadata.resourceVersion, rvB);
  assert.equal(p2.stats().created + p2.stats().updated, 0, "the standby wrote nothing");

  // Edited content is put back; a removed label too; other keys are kept.
  await kube.request("PUT", "/api/v1/namespaces/app-a/configmaps/istio-ca-root-cert", {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: "istio-ca-root-cert", namespace: "app-a", resourceVersion: rv },
    data: { "root-cert.pem": "tampered", extra: "kept" },
  });
  const repaired = await waitFor("repair of an edited configmap", hasBundle("app-a", rootA));
  assert.equal(repaired.data?.extra, "kept");

  // Deleted: recreated.
  await kube.request("DELETE", "/api/v1/namespaces/app-b/configmaps/istio-ca-root-cert");
  await waitFor("recreation of a deleted configmap", hasBundle("app-b", rootA));

  // Root rotation: old + new while the overlap lasts, then only the new one. A watch records
  // every bundle app-a held, so the overlap is seen however briefly the test gets to look.
  const rootB = selfSignedRootPem("root B", 86400);
  const published = recordBundles("app-a");
  try {
    await waitFor("the recorder sees the current bundle", async () => published.values.at(-1) === rootA);
    roots = [rootB];
    await waitFor("new root only after the overlap", hasBundle("app-a", rootB), 15_000);
    await waitFor("the recorder sees the new root", async () => published.values.at(-1) === rootB);
    assert.deepEqual(
      published.values,
      [rootA, rootB + rootA, rootB],
      "old + new during the overlap, then new",
    );
  } finally {
    published.stop();
  }

  // The leader stops (releases the Lease): the standby takes over and keeps repairing.
  const written = p1.stats().created + p1.stats().updated;
  assert.ok(written > 0);
  await p1.close();
  await waitFor("standby takes over", async () => p2.isLeader(), 10_000);
  await kube.request("PUT", "/api/v1/namespaces/app-b/configmaps/istio-ca-root-cert", {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: "istio-ca-root-cert", namespace: "app-b" },
    data: { "root-cert.pem": "tampered again" },
  });
  const byNewLeader = await waitFor("repair by the new leader", hasBundle("app-b", rootB));
  assert.equal(byNewLeader.metadata.annotations?.["meshvault.io/written-by"], "replica-2");
  assert.ok(p2.stats().updated + p2.stats().created > 0);
});

test("a crashed leader (no release) is replaced after the lease duration", async () => {
  // A leader killed without releasing: a lease held by an identity that never renews.
  const now = new Date().toISOString().replace(/Z$/, "000Z"); // MicroTime: 6 fractional digits
  await kube.request("POST", "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases", {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: { name: "crash-test" },
    spec: { holderIdentity: "crashed-replica", leaseDurationSeconds: 3, renewTime: now, acquireTime: now },
  });
  const started = Date.now();
  const p = await publisher("replica-3", { leaseName: "crash-test", configMapName: "crash-root" });
  assert.equal(p.isLeader(), false);
  await waitFor("takeover of an abandoned lease", async () => p.isLeader(), 10_000);
  assert.ok(Date.now() - started >= 2900, "waited out the lease duration");
  await waitFor("publishing after takeover", hasBundle("app-a", roots.join(""), "crash-root"));
  await p.close();
});

test("namespace selector: only labelled namespaces get the ConfigMap", async () => {
  await kube.request("POST", "/api/v1/namespaces", {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: "meshed", labels: { "istio-injection": "enabled" } },
  });
  const p = await publisher("replica-4", {
    leaseName: "selector-test",
    configMapName: "selected-root",
    namespaceSelector: "istio-injection=enabled",
  });
  await waitFor("configmap in the selected namespace", hasBundle("meshed", roots.join(""), "selected-root"));
  // Labelling a namespace later brings it in.
  const ns = (await kube.request("GET", "/api/v1/namespaces/app-a")).body as {
    metadata: { labels?: Record<string, string> };
  };
  ns.metadata.labels = { ...ns.metadata.labels, "istio-injection": "enabled" };
  await kube.request("PUT", "/api/v1/namespaces/app-a", ns);
  await waitFor(
    "configmap in a namespace labelled later",
    hasBundle("app-a", roots.join(""), "selected-root"),
  );
  assert.equal(await getCm("app-b", "selected-root"), undefined);
  await p.close();
});
