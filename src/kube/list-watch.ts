// List, then watch from the list's resourceVersion; on any end of the watch
// (server timeout, 410 Gone, network) list again after a backoff. The relist also
// serves as the periodic resync, so a missed event cannot leave a namespace wrong
// for longer than one watch period.
import { Watch, type KubeConfig, type KubernetesObject } from "@kubernetes/client-node";
import { backoffDelay } from "../timing/backoff.js";

/** Between failed lists/watches: 1 s doubling to 30 s, equal jitter (a fleet of servers spreads out). */
const RELIST_BACKOFF = { initialMs: 1000, maxMs: 30_000 };

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

export interface ListWatchOptions<T extends KubernetesObject> {
  kubeConfig: KubeConfig;
  /** Collection path, e.g. /api/v1/namespaces. */
  path: string;
  /** labelSelector / fieldSelector, applied to both list and watch. */
  selectors?: { labelSelector?: string; fieldSelector?: string };
  list: () => Promise<{ items: T[]; metadata?: { resourceVersion?: string } }>;
  /** The full current set, after every (re)list. */
  onList: (items: T[]) => void;
  onEvent: (type: WatchEventType, obj: T) => void;
  onError?: (err: unknown) => void;
  /** Server-side watch timeout, i.e. the resync period (default 300 s). */
  watchTimeoutSeconds?: number;
}

export interface ListWatchHandle {
  stop(): void;
}

export function listAndWatch<T extends KubernetesObject>(o: ListWatchOptions<T>): ListWatchHandle {
  const watch = new Watch(o.kubeConfig);
  let stopped = false;
  let controller: AbortController | undefined;
  let timer: NodeJS.Timeout | undefined;
  let failures = 0;

  const again = (): void => {
    if (stopped) return;
    const delay = failures === 0 ? 0 : backoffDelay(failures, RELIST_BACKOFF);
    timer = setTimeout(() => void cycle(), delay);
  };

  const cycle = async (): Promise<void> => {
    if (stopped) return;
    let resourceVersion: string | undefined;
    try {
      const list = await o.list();
      if (stopped) return;
      resourceVersion = list.metadata?.resourceVersion;
      o.onList(list.items);
    } catch (err) {
      failures++;
      o.onError?.(err);
      again();
      return;
    }
    const started = Date.now();
    controller = await watch.watch(
      o.path,
      {
        ...o.selectors,
        resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: o.watchTimeoutSeconds ?? 300,
      },
      (type: string, obj: T) => {
        if (stopped) return;
        if (type === "ADDED" || type === "MODIFIED" || type === "DELETED") o.onEvent(type, obj);
        else if (type === "ERROR") controller?.abort(); // e.g. 410 Gone: relist
      },
      (err: unknown) => {
        if (stopped) return;
        // A watch that ran for a while and ended is normal; one that failed at once is a failure.
        if (Date.now() - started < 1000) {
          failures++;
          if (err) o.onError?.(err);
        } else failures = 0;
        again();
      },
    );
  };

  void cycle();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      controller?.abort();
    },
  };
}
