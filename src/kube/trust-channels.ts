// What one cluster publishes as its trust bundle, read for `meshvault verify` and
// `meshvault root status`: the `istio-ca-root-cert` ConfigMaps (every namespace, or the
// chosen ones) and the `cacerts` Secret (its root-cert.pem, and ca-cert.pem + cert-chain.pem
// as a chain the cluster's istiod signs under).
import { CoreV1Api, type KubeConfig } from "@kubernetes/client-node";
import { describeKubeError, forbiddenHint, serverOf, statusOf } from "./client.js";
import { ROOT_CONFIGMAP_KEY, ROOT_CONFIGMAP_NAME } from "./root-publisher.js";

export interface ClusterChannel {
  name: string;
  bundlePem?: string;
  error?: string;
}

export interface ClusterTrust {
  channels: ClusterChannel[];
  /** The cacerts intermediate with its chain (leaf first), when the Secret exists. */
  samples: { what: string; chainPem: string }[];
  notes: string[];
}

export interface ClusterTrustOptions {
  /** Namespaces whose ConfigMap to read; empty: every namespace that has one. */
  namespaces: string[];
  /** `namespace/name` of istiod's plug-in CA Secret; undefined: do not read it. */
  cacerts?: { namespace: string; name: string; required: boolean } | undefined;
  configMapName?: string;
}

export async function readClusterTrust(kc: KubeConfig, o: ClusterTrustOptions): Promise<ClusterTrust> {
  const api = kc.makeApiClient(CoreV1Api);
  const cmName = o.configMapName ?? ROOT_CONFIGMAP_NAME;
  const out: ClusterTrust = { channels: [], samples: [], notes: [] };
  const where = serverOf(kc);
  if (o.namespaces.length === 0) {
    try {
      const list = await api.listConfigMapForAllNamespaces({ fieldSelector: `metadata.name=${cmName}` });
      for (const cm of list.items)
        out.channels.push({
          name: `configmap ${cm.metadata?.namespace}/${cmName}`,
          ...bundleOrError(cm.data?.[ROOT_CONFIGMAP_KEY], `key ${ROOT_CONFIGMAP_KEY} is missing`),
        });
      if (list.items.length === 0)
        out.notes.push(
          `no ConfigMap ${cmName} in any namespace on ${where}: is meshvault's root publisher running there?`,
        );
    } catch (err) {
      out.notes.push(`cannot list ConfigMaps ${cmName} on ${where}: ${explain(err, "list", "configmaps")}`);
    }
  }
  for (const ns of o.namespaces) {
    const name = `configmap ${ns}/${cmName}`;
    try {
      const cm = await api.readNamespacedConfigMap({ name: cmName, namespace: ns });
      out.channels.push({
        name,
        ...bundleOrError(cm.data?.[ROOT_CONFIGMAP_KEY], `key ${ROOT_CONFIGMAP_KEY} is missing`),
      });
    } catch (err) {
      out.channels.push({
        name,
        error:
          statusOf(err) === 404
            ? `not found on ${where}: the root publisher has not written it (is the namespace selected and the publisher the Lease holder?)`
            : explain(err, "get", "configmaps", ns),
      });
    }
  }
  if (o.cacerts) {
    const { namespace, name } = o.cacerts;
    try {
      const s = await api.readNamespacedSecret({ name, namespace });
      const file = (k: string): string | undefined => {
        const v = s.data?.[k];
        return v ? Buffer.from(v, "base64").toString("utf8") : undefined;
      };
      out.channels.push({
        name: `secret ${namespace}/${name} root-cert.pem`,
        ...bundleOrError(file("root-cert.pem"), "key root-cert.pem is missing"),
      });
      const ca = file("ca-cert.pem");
      if (ca)
        out.samples.push({
          what: `secret ${namespace}/${name} ca-cert.pem`,
          chainPem: ca + (file("cert-chain.pem") ?? ""),
        });
    } catch (err) {
      if (statusOf(err) === 404 && !o.cacerts.required) return out;
      out.channels.push({
        name: `secret ${namespace}/${name}`,
        error: statusOf(err) === 404 ? `not found on ${where}` : explain(err, "get", "secrets", namespace),
      });
    }
  }
  return out;
}

function bundleOrError(pem: string | undefined, missing: string): { bundlePem?: string; error?: string } {
  return pem ? { bundlePem: pem } : { error: missing };
}

function explain(err: unknown, verb: string, resource: string, ns?: string): string {
  return `${describeKubeError(err)}${statusOf(err) === 403 ? `; ${forbiddenHint(verb, resource, ns)}` : ""}`;
}
