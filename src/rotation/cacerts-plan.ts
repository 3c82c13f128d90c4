// `meshvault cacerts` during a root rotation: what istiod's plug-in CA must hold in each
// phase (stock istiod trusts root-cert.pem and signs with ca-cert.pem):
//
//   none, prepared  the source's own intermediate and roots
//   trust-both      root-cert.pem = old + new; the intermediate stays under the old root
//   switched        root-cert.pem = old + new; the intermediate comes from the new root
//   retired         root-cert.pem = the new root alone; the intermediate from the new root
//
// istiod accepts each change of root-cert.pem only with ISTIO_MULTIROOT_MESH=true (old and
// new bundles must be subsets of each other, which each step keeps).
import type { Log } from "../log/logger.js";
import type { CaCertsRootPlan, CaCertsRotation } from "../kube/cacerts.js";
import { localNextDir } from "./server-hook.js";
import type { RotationState, RotationStore } from "./state.js";

export function cacertsPlan(s: RotationState | undefined): CaCertsRootPlan {
  if (!s || s.phase === "prepared") return { key: s ? `${s.id}/prepared` : "none" };
  const key = `${s.id}/${s.phase}`;
  const under = { rootPem: s.next.pem, vaultIssuer: s.next.issuer, localDir: localNextDir(s.id) };
  switch (s.phase) {
    case "trust-both":
      return { key, bundle: [s.old.pem, s.next.pem] };
    case "switched":
      return { key, bundle: [s.old.pem, s.next.pem], under };
    case "retired":
      return { key, bundle: [s.next.pem], under };
  }
}

/**
 * The rotation state at `store`, as a plan for `cacerts`. A state for another authority kind
 * is ignored; when the state cannot be read the last plan is kept (cacerts must go on
 * renewing), and the error is logged once.
 */
export function cacertsRotation(
  store: RotationStore,
  authority: string,
  pollMs: number,
  log: Log,
): CaCertsRotation {
  let last: CaCertsRootPlan = { key: "none" };
  let failing: string | undefined;
  return {
    pollMs,
    async plan() {
      try {
        const s = await store.read();
        if (failing) log.info({ state: store.location }, "rotation state readable again");
        failing = undefined;
        last = cacertsPlan(s && s.authority === authority ? s : undefined);
      } catch (err) {
        const msg = (err as Error).message;
        if (msg !== failing)
          log.warn(
            { state: store.location, err: msg, keeping: last.key },
            "cannot read the root rotation state: keeping the last plan; give cacerts' Vault policy read on it",
          );
        failing = msg;
      }
      return last;
    },
  };
}
