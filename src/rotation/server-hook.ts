// The server's side of root rotation: where the state lives for this configuration, and the
// configured authority wrapped so it follows the state (see rotating-authority.ts).
import { join, resolve } from "node:path";
import type { ServerConfig } from "../config/schema.js";
import { vaultConnectionFromConfig } from "../config/vault-schema.js";
import type { Log } from "../log/logger.js";
import type { Authority } from "../authority/authority.js";
import { createAuthority, type AuthorityContext } from "../authority/factory.js";
import { connectVault, type VaultClient } from "../vault/index.js";
import { RotatingAuthority } from "./rotating-authority.js";
import type { KubeConfig } from "@kubernetes/client-node";
import { loadKubeConfig } from "../kube/client.js";
import { kubeRotationStore } from "./kube-state.js";
import { fileRotationStore, vaultRotationStore, type RotationState, type RotationStore } from "./state.js";

/** Authorities whose root meshvault can rotate by itself (the others: README, "Rotating the root"). */
export const AUTOMATIC_ROTATION = ["local", "vault-intermediate", "vault-sign"] as const;

/** `rotation.state`, or the default: Vault KV for Vault-backed authorities, a file in the data dir otherwise. */
export function rotationStateRef(config: ServerConfig): string {
  if (config.rotation.state) return config.rotation.state;
  if (config.authority.type.startsWith("vault-"))
    return `vault:secret/data/meshvault/root-rotation/${config.trustDomain}`;
  return `file:${join(resolve(config.dataDir), "root-rotation.json")}`;
}

/** The cluster a `kube:` state lives in: the `kubernetes:` section's connection, else in-cluster / KUBECONFIG. */
export function stateKubeConfig(config: ServerConfig): () => KubeConfig {
  return () =>
    loadKubeConfig({ kubeconfig: config.kubernetes?.kubeconfig, context: config.kubernetes?.context });
}

/** The store for `ref`; `vault` supplies the client for `vault:` references, `kube` the cluster for `kube:` ones. */
export function rotationStore(
  ref: string,
  vault: () => VaultClient,
  kube: () => KubeConfig = () => loadKubeConfig(),
): RotationStore {
  if (ref.startsWith("file:")) return fileRotationStore(ref.slice("file:".length));
  if (ref.startsWith("kube:")) return kubeRotationStore(kube(), ref.slice("kube:".length));
  return vaultRotationStore(vault(), ref);
}

/** A second instance of the configured authority under the rotation's new root. */
export function nextAuthority(config: ServerConfig, ctx: AuthorityContext, s: RotationState): Authority {
  switch (config.authority.type) {
    case "local":
      return createAuthority(config.authority, ctx, { localDir: localNextDir(s.id) });
    case "vault-intermediate":
    case "vault-sign":
      if (!s.next.issuer) throw new Error(`rotation ${s.id} names no Vault issuer for the new root`);
      return createAuthority(config.authority, ctx, { rootIssuer: s.next.issuer });
    default:
      throw new Error(
        `the ${config.authority.type} authority does not rotate its root by itself: follow the README's "Rotating the root" steps for it`,
      );
  }
}

export function localNextDir(id: string): string {
  return `local-ca-next-${id}`;
}

/** Wraps `base` so it follows the rotation state; closes its own Vault connection on close(). */
export function withRootRotation(
  base: Authority,
  config: ServerConfig,
  ctx: AuthorityContext,
  log: Log,
  onSignerChange: () => void,
): RotatingAuthority {
  const ref = rotationStateRef(config);
  let connected: ReturnType<typeof connectVault> | undefined;
  const store = rotationStore(
    ref,
    () => {
      const vlog = log.child({ component: "vault" });
      connected = connectVault(
        vaultConnectionFromConfig(config.vault, ctx.env ?? process.env, {
          warn: (m) => vlog.warn({ vault: config.vault?.address }, m),
        }),
        {
          logger: vlog,
        },
      );
      return connected.client;
    },
    stateKubeConfig(config),
  );
  const rotating = new RotatingAuthority(base, {
    store,
    makeNext: (s) => nextAuthority(config, ctx, s),
    // local: the new CA was moved to the configured directory; its renewals must write there.
    ...(config.authority.type === "local"
      ? { makeSuccessor: () => createAuthority(config.authority, ctx) }
      : {}),
    pollMs: config.rotation.pollInterval * 1000,
    maxTtlSeconds: config.certificates.maxTtl,
    log: log.child({ component: "root-rotation" }),
    onSignerChange,
    onClose: () => connected?.close(),
  });
  return rotating;
}
