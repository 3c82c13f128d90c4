// Publishes the trust bundle as ConfigMap `istio-ca-root-cert` (key `root-cert.pem`,
// label `istio.io/config: "true"`) in every namespace, as istiod's namespace
// controller does: created for new namespaces, put back when edited or deleted,
// and never written when it already holds the right content (our own writes come
// back as watch events; comparing first is what keeps that from looping).
//
// Only the leader of a Lease writes (see RootPublisherService), so any number of
// server replicas can run.
import { CoreV1Api, type KubeConfig, type V1ConfigMap, type V1Namespace } from "@kubernetes/client-node";
import { describeKubeError, forbiddenHint, statusOf } from "./client.js";
import { listAndWatch, type ListWatchHandle } from "./list-watch.js";
import type { Log } from "../log/logger.js";

export const ROOT_CONFIGMAP_NAME = "istio-ca-root-cert";
export const ROOT_CONFIGMAP_KEY = "root-cert.pem";
export const ISTIO_CONFIG_LABEL = "istio.io/config";
export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
/** Which replica (its Lease identity) last wrote the ConfigMap: shows that one writer at a time did. */
export const WRITTEN_BY_ANNOTATION = "meshvault.io/written-by";

export interface RootPublisherOptions {
  kubeConfig: KubeConfig;
  /** The PEM bundle to publish ("" = nothing yet: write nothing). */
  bundle: () => string;
  configMapName?: string;
  /** Only namespaces matching this label selector (e.g. "istio-injection=enabled"); default all. */
  namespaceSelector?: string;
  /** Watch timeout = full resync period, seconds (default 300). */
  resyncSeconds?: number;
  /** This replica's Lease identity, recorded in the WRITTEN_BY_ANNOTATION of what it writes. */
  writer?: string;
  /** `log.child({ component })` from the server's logger. */
  log?: Log;
}

/** Counts of what the publisher did, for tests and metrics. */
export interface PublisherStats {
  created: number;
  updated: number;
  unchanged: number;
  errors: number;
}

export class RootPublisher {
  readonly stats: PublisherStats = { created: 0, updated: 0, unchanged: 0, errors: 0 };
  private readonly api: CoreV1Api;
  private readonly name: string;
  private readonly namespaces = new Map<string, V1Namespace>();
  private readonly configMaps = new Map<string, V1ConfigMap>();
  private readonly queue = new Set<string>();
  private handles: ListWatchHandle[] = [];
  private working: Promise<void> | undefined;
  private running = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly warned = new Map<string, string>();
  private readonly retry = new Set<string>();

  constructor(private readonly opts: RootPublisherOptions) {
    this.api = opts.kubeConfig.makeApiClient(CoreV1Api);
    this.name = opts.configMapName ?? ROOT_CONFIGMAP_NAME;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const resync = this.opts.resyncSeconds ?? 300;
    const selector = this.opts.namespaceSelector?.trim() || undefined;
    this.handles.push(
      listAndWatch<V1Namespace>({
        kubeConfig: this.opts.kubeConfig,
        path: "/api/v1/namespaces",
        selectors: selector ? { labelSelector: selector } : {},
        list: () => this.api.listNamespace(selector ? { labelSelector: selector } : {}),
        onList: (items) => {
          this.namespaces.clear();
          for (const ns of items) if (ns.metadata?.name) this.namespaces.set(ns.metadata.name, ns);
          this.enqueueAll();
        },
        onEvent: (type, ns) => {
          const n = ns.metadata?.name;
          if (!n) return;
          if (type === "DELETED") this.namespaces.delete(n);
          else {
            this.namespaces.set(n, ns);
            this.enqueue(n);
          }
        },
        onError: (err) => this.apiError(err, "list/watch", "namespaces"),
        watchTimeoutSeconds: resync,
      }),
      listAndWatch<V1ConfigMap>({
        kubeConfig: this.opts.kubeConfig,
        path: "/api/v1/configmaps",
        selectors: { fieldSelector: `metadata.name=${this.name}` },
        list: () => this.api.listConfigMapForAllNamespaces({ fieldSelector: `metadata.name=${this.name}` }),
        onList: (items) => {
          this.configMaps.clear();
          for (const cm of items) if (cm.metadata?.namespace) this.configMaps.set(cm.metadata.namespace, cm);
          this.enqueueAll();
        },
        onEvent: (type, cm) => {
          const n = cm.metadata?.namespace;
          if (!n) return;
          if (type === "DELETED") this.configMaps.delete(n);
          else this.configMaps.set(n, cm);
          this.enqueue(n);
        },
        onError: (err) => this.apiError(err, "list/watch", "configmaps"),
        watchTimeoutSeconds: resync,
      }),
    );
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.retry.clear();
    for (const h of this.handles) h.stop();
    this.handles = [];
    this.queue.clear();
    await this.working;
    this.namespaces.clear();
    this.configMaps.clear();
  }

  /** Re-checks every namespace (call when the bundle changed). */
  enqueueAll(): void {
    for (const n of this.namespaces.keys()) this.enqueue(n);
  }

  private enqueue(ns: string): void {
    if (!this.running) return;
    this.queue.add(ns);
    this.working ??= this.drain().finally(() => (this.working = undefined));
  }

  private async drain(): Promise<void> {
    // One namespace at a time: bounded load on the API server, and events for the
    // same namespace coalesce in the Set while a write is in flight.
    while (this.running && this.queue.size > 0) {
      const ns = this.queue.values().next().value as string;
      this.queue.delete(ns);
      try {
        await this.reconcile(ns);
      } catch (err) {
        this.stats.errors++;
        this.apiError(err, "write", `configmap ${ns}/${this.name}`, ns);
        // Retry later; a later event or the resync would also bring it back.
        this.retry.add(ns);
        this.retryTimer ??= setTimeout(() => {
          this.retryTimer = undefined;
          const again = [...this.retry];
          this.retry.clear();
          for (const n of again) this.enqueue(n);
        }, 2000);
        this.retryTimer.unref();
      }
    }
  }

  private desired(existing: V1ConfigMap | undefined, bundle: string): V1ConfigMap | undefined {
    const labels = existing?.metadata?.labels ?? {};
    const current = existing?.data?.[ROOT_CONFIGMAP_KEY];
    if (existing && current === bundle && labels[ISTIO_CONFIG_LABEL] === "true") return undefined;
    return {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: {
        name: this.name,
        namespace: existing?.metadata?.namespace,
        resourceVersion: existing?.metadata?.resourceVersion,
        labels: { ...labels, [ISTIO_CONFIG_LABEL]: "true", [MANAGED_BY_LABEL]: "meshvault" },
        annotations: this.opts.writer
          ? { ...existing?.metadata?.annotations, [WRITTEN_BY_ANNOTATION]: this.opts.writer }
          : existing?.metadata?.annotations,
      },
      // Keys someone else added are kept; ours is what we own.
      data: { ...existing?.data, [ROOT_CONFIGMAP_KEY]: bundle },
    };
  }

  private async reconcile(ns: string): Promise<void> {
    const namespace = this.namespaces.get(ns);
    if (!namespace || namespace.status?.phase === "Terminating") return;
    const bundle = this.opts.bundle();
    if (!bundle) return;
    let existing = this.configMaps.get(ns);
    for (let attempt = 0; attempt < 3; attempt++) {
      const body = this.desired(existing, bundle);
      if (!body) {
        this.stats.unchanged++;
        return;
      }
      body.metadata!.namespace = ns;
      try {
        if (!existing) {
          const made = await this.api.createNamespacedConfigMap({ namespace: ns, body });
          this.configMaps.set(ns, made);
          this.stats.created++;
          this.opts.log?.info({ configMap: `${ns}/${this.name}` }, "created the root ConfigMap");
        } else {
          const made = await this.api.replaceNamespacedConfigMap({ name: this.name, namespace: ns, body });
          this.configMaps.set(ns, made);
          this.stats.updated++;
          this.opts.log?.info({ configMap: `${ns}/${this.name}` }, "corrected the root ConfigMap");
        }
        this.warned.delete(ns);
        return;
      } catch (err) {
        const status = statusOf(err);
        // Our cache was behind (exists already / changed meanwhile): read and compare again.
        if (status !== 409 && status !== 404) throw err;
        existing = await this.api
          .readNamespacedConfigMap({ name: this.name, namespace: ns })
          .catch((e: unknown) => {
            if (statusOf(e) === 404) return undefined;
            throw e;
          });
      }
    }
    throw new Error(`configmap ${ns}/${this.name} kept changing under us; will retry`);
  }

  private apiError(err: unknown, verb: string, what: string, ns?: string): void {
    const status = statusOf(err);
    const hint =
      status === 403
        ? `; ${forbiddenHint(what.startsWith("namespaces") ? "get, list, watch" : "get, list, watch, create, update", what.startsWith("namespaces") ? "namespaces" : "configmaps")}`
        : "";
    const msg = `${describeKubeError(err)}${hint}`;
    // Say it once per namespace until it works again: a forbidden namespace must not flood the log.
    const key = ns ?? what;
    if (this.warned.get(key) === `${verb} ${what}: ${msg}`) return;
    this.warned.set(key, `${verb} ${what}: ${msg}`);
    this.opts.log?.warn({ verb, resource: what, err: msg }, "root publisher: a Kubernetes API call failed");
  }
}
