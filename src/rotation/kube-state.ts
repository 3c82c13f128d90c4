// Rotation state in a Kubernetes ConfigMap (`rotation.state: kube:<namespace>/<name>`, key
// `state`), for replicas that share a cluster but no Vault KV or disk. Every write carries the
// resourceVersion of the last read (create when there was none), so when two operators advance
// the same phase the API server lets one through and refuses the other with 409; that refusal
// becomes a RotationStateError saying what the state holds now.
import { CoreV1Api, type KubeConfig, type V1ConfigMap } from "@kubernetes/client-node";
import { describeKubeError, forbiddenHint, statusOf } from "../kube/client.js";
import { MANAGED_BY_LABEL } from "../kube/root-publisher.js";
import { namespacedNameProblem } from "../pki/kube-names.js";
import { changedSinceRead, checkRotationState, RotationStateError, type RotationStore } from "./state.js";

export const KUBE_STATE_KEY = "state";

export interface KubeStateRef {
  namespace: string;
  name: string;
}

export function parseKubeStateRef(ref: string): KubeStateRef {
  const problem = namespacedNameProblem(ref, "ConfigMap", `kube:${ref}`);
  if (problem) throw new RotationStateError(`rotation.state ${problem}`);
  const [namespace, name] = ref.split("/") as [string, string];
  return { namespace, name };
}

export function kubeRotationStore(kc: KubeConfig, ref: string): RotationStore {
  const { namespace, name } = parseKubeStateRef(ref);
  const api = kc.makeApiClient(CoreV1Api);
  const where = `kube:${namespace}/${name}`;
  // The version the last read saw: "" = the ConfigMap did not exist, undefined = never read.
  let seen: string | undefined;
  const failed = (verb: string, err: unknown): RotationStateError =>
    new RotationStateError(
      `cannot ${verb} rotation state ${where}: ${describeKubeError(err)}` +
        (statusOf(err) === 403
          ? `; ${forbiddenHint(verb === "read" ? "get" : "get, create, update", "configmaps", namespace)}`
          : ""),
      { cause: err },
    );
  const read = async (): Promise<V1ConfigMap | undefined> => {
    try {
      return await api.readNamespacedConfigMap({ name, namespace });
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw failed("read", err);
    }
  };
  return {
    location: where,
    async read() {
      const cm = await read();
      seen = cm?.metadata?.resourceVersion ?? "";
      const text = cm?.data?.[KUBE_STATE_KEY];
      if (text === undefined) return undefined;
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch {
        throw new RotationStateError(
          `rotation state ${where} (key "${KUBE_STATE_KEY}") is not JSON: restore it or delete the ConfigMap to start over`,
        );
      }
      return checkRotationState(raw, where);
    },
    async write(s) {
      if (seen === undefined)
        throw new RotationStateError(`rotation state ${where} written before it was read (a bug)`);
      const metadata = {
        name,
        namespace,
        labels: { [MANAGED_BY_LABEL]: "meshvault" },
        ...(seen ? { resourceVersion: seen } : {}),
      };
      const body: V1ConfigMap = {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata,
        data: { [KUBE_STATE_KEY]: JSON.stringify(s, null, 2) },
      };
      try {
        const made = seen
          ? await api.replaceNamespacedConfigMap({ name, namespace, body })
          : await api.createNamespacedConfigMap({ namespace, body });
        seen = made.metadata?.resourceVersion ?? "";
      } catch (err) {
        if (statusOf(err) !== 409) throw failed("write", err);
        // Someone wrote (or created) it since our read: say what it holds now, change nothing.
        let now: { id?: string; phase?: string } | undefined;
        try {
          const text = (await read())?.data?.[KUBE_STATE_KEY];
          now = text ? (JSON.parse(text) as { id?: string; phase?: string }) : undefined;
        } catch {
          /* the refusal below is the message that matters */
        }
        throw changedSinceRead(where, now, s.phase, err);
      }
    },
  };
}
