// The Vault paths each Vault-backed authority calls, and the capability each
// call needs. One list feeds both the least-privilege policies that
// `meshvault vault setup` writes and the capability checks of
// `meshvault vault check`, so the two cannot drift apart.

import type {
  VaultIntermediateAuthorityConfig,
  VaultKvAuthorityConfig,
  VaultSignAuthorityConfig,
} from "../../config/vault-schema.js";
import { parseKvReference } from "../kv.js";

export type VaultAuthorityConfig =
  VaultSignAuthorityConfig | VaultKvAuthorityConfig | VaultIntermediateAuthorityConfig;
export type VaultMode = VaultAuthorityConfig["type"];
export const VAULT_MODES: readonly VaultMode[] = ["vault-sign", "vault-kv", "vault-intermediate"];

export type Capability = "create" | "read" | "update" | "delete" | "list" | "patch" | "sudo";

export interface PathAccess {
  /** API path without /v1/, e.g. "pki_int/sign/meshvault-workload". */
  path: string;
  capabilities: Capability[];
  /** What meshvault does there, for policy comments and check output. */
  why: string;
  /**
   * Vault serves this path without a token (PKI CA reads). It is still in the
   * policy because meshvault sends its token, but a token lacking it works.
   */
  unauthenticated?: boolean;
}

// Every long-running login renews its token and looks it up (TTL, renewable).
const TOKEN_SELF: PathAccess[] = [
  { path: "auth/token/renew-self", capabilities: ["update"], why: "renew meshvault's Vault token" },
  { path: "auth/token/lookup-self", capabilities: ["read"], why: "read the token's TTL" },
];

// The authorities read these without a token (Vault serves them to anyone);
// they are listed so the policy documents every path meshvault touches.
function caReads(mount: string): PathAccess[] {
  const why = "read the CA chain (trust bundle)";
  return [
    { path: `${mount}/ca_chain`, capabilities: ["read"], why, unauthenticated: true },
    { path: `${mount}/cert/ca_chain`, capabilities: ["read"], why, unauthenticated: true },
    {
      path: `${mount}/issuers`,
      capabilities: ["list"],
      why: "list the mount's issuers (roots)",
      unauthenticated: true,
    },
    {
      path: `${mount}/issuer/+/json`,
      capabilities: ["read"],
      why: "read each issuer's certificate",
      unauthenticated: true,
    },
  ];
}

/**
 * vault-sign with identity: workload: the role meshvault's own login signs its serving
 * certificate with. The workload role is templated to each caller's own ID, so it cannot.
 */
export function servingRoleName(role: string): string {
  return `${role}-serving`;
}

/** Paths meshvault's own Vault token needs for `authority`. */
export function serverAccess(authority: VaultAuthorityConfig): PathAccess[] {
  switch (authority.type) {
    case "vault-sign": {
      const sign: PathAccess[] =
        authority.identity === "server"
          ? [
              {
                path: `${authority.mount}/sign/${authority.role}`,
                capabilities: ["update"],
                why: "sign workload CSRs",
              },
            ]
          : [
              {
                path: `${authority.mount}/sign/${servingRoleName(authority.role)}`,
                capabilities: ["update"],
                why: "sign meshvault's own serving certificate (workloads sign with their own tokens)",
              },
            ];
      return [...sign, ...caReads(authority.mount), ...TOKEN_SELF];
    }
    case "vault-kv": {
      const out: PathAccess[] = [];
      const seen = new Set<string>();
      for (const ref of [authority.certificate, authority.privateKey, authority.chain, authority.root]) {
        if (ref === undefined) continue;
        const r = parseKvReference(ref);
        const paths: PathAccess[] =
          r.version === 2
            ? [
                {
                  path: `${r.mount}/data/${r.path}`,
                  capabilities: ["read"],
                  why: "read the CA certificate and key",
                },
                {
                  path: `${r.mount}/metadata/${r.path}`,
                  capabilities: ["read"],
                  why: "poll the secret's version for hot reload",
                },
              ]
            : [
                {
                  path: `${r.mount}/${r.path}`,
                  capabilities: ["read"],
                  why: "read the CA certificate and key",
                },
              ];
        for (const p of paths) {
          if (seen.has(p.path)) continue;
          seen.add(p.path);
          out.push(p);
        }
      }
      return [...out, ...TOKEN_SELF];
    }
    case "vault-intermediate": {
      const exported: PathAccess[] =
        authority.mode === "exported"
          ? [
              {
                path: `${authority.intermediateMount}/intermediate/generate/exported`,
                capabilities: ["update"],
                why: "generate the intermediate's key and CSR",
              },
              {
                path: `${authority.intermediateMount}/intermediate/set-signed`,
                capabilities: ["update"],
                why: "store the signed intermediate in its mount",
              },
            ]
          : [];
      return [
        {
          path: `${authority.rootMount}/root/sign-intermediate`,
          capabilities: ["update"],
          why: "have the root sign meshvault's intermediate CA",
        },
        {
          path: `${authority.rootMount}/issuer/+/sign-intermediate`,
          capabilities: ["update"],
          why: "have a root rotation's new root sign the intermediate (meshvault root rotate)",
        },
        {
          path: "secret/data/meshvault/root-rotation/+",
          capabilities: ["read"],
          why: "follow the root rotation state (rotation.state's default path)",
        },
        ...exported,
        ...caReads(authority.rootMount),
        ...TOKEN_SELF,
      ];
    }
  }
}

/** identity: workload (seed 000): what each workload's own Vault login needs. Empty otherwise. */
export function workloadAccess(authority: VaultAuthorityConfig): PathAccess[] {
  if (authority.type !== "vault-sign" || authority.identity !== "workload") return [];
  return [
    {
      path: `${authority.mount}/sign/${authority.role}`,
      capabilities: ["update"],
      why: "sign this workload's CSR",
    },
  ];
}

/** Default policy names: one per mode, so switching modes does not widen an old policy. */
export function defaultPolicyName(mode: VaultMode): string {
  return `meshvault-${mode.replace(/^vault-/, "")}`;
}
export const DEFAULT_WORKLOAD_POLICY = "meshvault-workload-sign";

/**
 * HCL for a policy granting exactly `access`. Deterministic text: a re-run
 * compares it byte for byte with what Vault holds.
 */
export function renderPolicy(name: string, mode: VaultMode, access: readonly PathAccess[]): string {
  const lines = [
    `# ${name}: written by \`meshvault vault setup --mode ${mode}\`.`,
    `# Least privilege: exactly the paths meshvault calls in this mode.`,
  ];
  for (const a of access) {
    lines.push(
      "",
      `# ${a.why}`,
      `path "${a.path}" {`,
      `  capabilities = [${a.capabilities.map((c) => `"${c}"`).join(", ")}]`,
      `}`,
    );
  }
  return `${lines.join("\n")}\n`;
}

/** One-line HCL for messages ("add this to a policy"). */
export function policySnippet(a: Pick<PathAccess, "path" | "capabilities">): string {
  return `path "${a.path}" { capabilities = [${a.capabilities.map((c) => `"${c}"`).join(", ")}] }`;
}
