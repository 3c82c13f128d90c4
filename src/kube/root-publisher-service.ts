// The root publisher as the server runs it: every replica follows the authority's
// trust bundle (so a standby that becomes leader knows which roots were retired
// recently), but only the Lease holder watches namespaces and writes ConfigMaps.
import type { KubeConfig } from "@kubernetes/client-node";
import { CoreV1Api } from "@kubernetes/client-node";
import { statusOf } from "./client.js";
import { LeaderElector } from "./leader-election.js";
import { RootBundle } from "./root-bundle.js";
import type { Log } from "../log/logger.js";
import {
  ROOT_CONFIGMAP_KEY,
  ROOT_CONFIGMAP_NAME,
  RootPublisher,
  type PublisherStats,
} from "./root-publisher.js";

export interface RootPublisherServiceOptions {
  kubeConfig: KubeConfig;
  /** The authority's current roots (PEM each). */
  roots: () => string[];
  /** Namespace of the Lease (and of the ConfigMap read at startup to learn recently retired roots). */
  namespace: string;
  leaseName?: string;
  identity?: string;
  leaseDurationSeconds?: number;
  renewPeriodMs?: number;
  configMapName?: string;
  namespaceSelector?: string;
  /** How long a root the authority dropped stays published (default 24 h). */
  overlapSeconds?: number;
  /** How often the authority's bundle is checked for changes (default 5 s). */
  rootsPollMs?: number;
  resyncSeconds?: number;
  /** `log.child({ component })` from the server's logger. */
  log?: Log;
}

export interface RootPublisherHandle {
  isLeader(): boolean;
  /** The bundle being published. */
  bundle(): string;
  stats(): PublisherStats;
  close(): Promise<void>;
}

export const DEFAULT_LEASE_NAME = "meshvault-root-publisher";

export async function startRootPublisher(o: RootPublisherServiceOptions): Promise<RootPublisherHandle> {
  const bundle = new RootBundle((o.overlapSeconds ?? 86400) * 1000);
  const name = o.configMapName ?? ROOT_CONFIGMAP_NAME;
  // Roots a previous leader published but our authority no longer names: keep them for
  // one overlap window (the rotation may have happened while this replica was down).
  try {
    const cm = await o.kubeConfig
      .makeApiClient(CoreV1Api)
      .readNamespacedConfigMap({ name, namespace: o.namespace });
    bundle.update(o.roots());
    const published = cm.data?.[ROOT_CONFIGMAP_KEY];
    if (published) bundle.adopt(published);
  } catch (err) {
    if (statusOf(err) !== 404)
      o.log?.warn(
        { configMap: `${o.namespace}/${name}`, err: (err as Error).message },
        "root publisher: cannot read the ConfigMap to learn previously published roots",
      );
  }
  bundle.update(o.roots());

  // The callbacks run only after elector.start(), when `publisher` below exists.
  const elector: LeaderElector = new LeaderElector({
    kubeConfig: o.kubeConfig,
    namespace: o.namespace,
    name: o.leaseName ?? DEFAULT_LEASE_NAME,
    identity: o.identity,
    leaseDurationSeconds: o.leaseDurationSeconds,
    renewPeriodMs: o.renewPeriodMs,
    onStartedLeading: () => publisher.start(),
    onStoppedLeading: () => publisher.stop(),
    log: o.log,
  });
  const publisher: RootPublisher = new RootPublisher({
    kubeConfig: o.kubeConfig,
    bundle: () => bundle.pem(),
    configMapName: name,
    namespaceSelector: o.namespaceSelector,
    resyncSeconds: o.resyncSeconds,
    writer: elector.identity,
    log: o.log,
  });
  let last = bundle.pem();
  const poll = setInterval(() => {
    bundle.update(o.roots());
    // pem() also drops retired roots whose window ended, so compare the output.
    const now = bundle.pem();
    if (now === last) return;
    last = now;
    o.log?.info({ roots: o.roots().length }, "trust bundle changed: republishing root ConfigMaps");
    publisher.enqueueAll();
  }, o.rootsPollMs ?? 5000);
  poll.unref();
  await elector.start();
  return {
    isLeader: () => elector.isLeader(),
    bundle: () => bundle.pem(),
    stats: () => ({ ...publisher.stats }),
    close: async () => {
      clearInterval(poll);
      await elector.stop();
      await publisher.stop();
    },
  };
}
