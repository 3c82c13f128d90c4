// How meshvault reaches the Kubernetes API: an explicit kubeconfig, the pod's own
// service-account mount (in-cluster), or the usual KUBECONFIG / ~/.kube/config.
// Every Kubernetes call of the project goes through a KubeConfig made here.
import { existsSync } from "node:fs";
import { ApiException, KubeConfig } from "@kubernetes/client-node";

/** Where the in-cluster token, CA and namespace are mounted in every pod. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface KubeConnectionOptions {
  /** Path of a kubeconfig file; wins over everything else. */
  kubeconfig?: string | undefined;
  /** Context inside the kubeconfig (default its current-context). */
  context?: string | undefined;
}

export class KubeConfigError extends Error {
  override name = "KubeConfigError";
}

/** True when running in a pod with the service-account mount and the API server's env vars. */
export function inCluster(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.KUBERNETES_SERVICE_HOST) && existsSync(`${SERVICE_ACCOUNT_DIR}/token`);
}

/**
 * Loads the connection: `kubeconfig` if given, else in-cluster when in a pod,
 * else KUBECONFIG / ~/.kube/config. Fails with what was tried and how to fix it.
 */
export function loadKubeConfig(opts: KubeConnectionOptions = {}): KubeConfig {
  const kc = new KubeConfig();
  let source: string;
  try {
    if (opts.kubeconfig) {
      source = `kubeconfig ${opts.kubeconfig}`;
      kc.loadFromFile(opts.kubeconfig);
    } else if (inCluster()) {
      source = `in-cluster service account (${SERVICE_ACCOUNT_DIR})`;
      // The token file is re-read by the client as kubelet rotates it.
      kc.loadFromCluster();
    } else {
      source = process.env.KUBECONFIG ? `KUBECONFIG=${process.env.KUBECONFIG}` : "~/.kube/config";
      kc.loadFromDefault();
    }
    if (opts.context) kc.setCurrentContext(opts.context);
  } catch (err) {
    throw new KubeConfigError(
      `cannot load the Kubernetes connection: ${(err as Error).message}; pass --kubeconfig (or kubernetes.kubeconfig) or run in a pod with a service account`,
      { cause: err },
    );
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster)
    throw new KubeConfigError(
      `no Kubernetes cluster in ${source}: set kubernetes.kubeconfig / --kubeconfig to a kubeconfig with a current-context`,
    );
  return kc;
}

/** The API server address, for messages. */
export function serverOf(kc: KubeConfig): string {
  return kc.getCurrentCluster()?.server ?? "(unknown API server)";
}

/** HTTP status of a failed client-node call, or undefined for transport errors. */
export function statusOf(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "number" ? code : undefined;
}

/** The Status message the API server sent (not the client's multi-line dump, which repeats the body). */
export function describeKubeError(err: unknown): string {
  if (err instanceof ApiException) {
    const body: unknown = err.body;
    let message: string | undefined;
    if (typeof body === "string") {
      try {
        const parsed = JSON.parse(body) as { message?: unknown };
        if (typeof parsed.message === "string") message = parsed.message;
      } catch {
        message = body.slice(0, 300);
      }
    } else if (
      body &&
      typeof body === "object" &&
      typeof (body as { message?: unknown }).message === "string"
    ) {
      message = (body as { message: string }).message;
    }
    return `HTTP ${err.code}${message ? `: ${message}` : ""}`;
  }
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
  }
  return String(err);
}

/** What RBAC rule would fix a 403, for messages. */
export function forbiddenHint(verb: string, resource: string, namespace?: string): string {
  return `grant the service account "${verb}" on ${resource}${namespace ? ` in namespace ${namespace}` : " (cluster-wide)"} (see deploy/helm/meshvault templates/rbac.yaml)`;
}
