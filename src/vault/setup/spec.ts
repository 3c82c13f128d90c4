// What `meshvault vault setup` makes true in Vault: one fully resolved,
// validated description (no I/O, no Vault calls). resolve.ts builds it from
// the server config and flags; plan.ts turns it into steps.

import type { PathAccess, VaultAuthorityConfig } from "./access.js";

export type RootSource =
  | {
      kind: "generate";
      commonName: string;
      /** Seconds. */
      ttl: number;
      keyType: "ec" | "rsa";
      keyBits: number;
      issuerName: string;
    }
  | {
      kind: "import";
      /** PEM file with the root certificate and its private key (seed 003's openssl root). */
      bundleFile: string;
    };

export interface PkiMountSpec {
  path: string;
  /** Seconds; `vault secrets tune -max-lease-ttl`. */
  maxLeaseTtl: number;
}

export interface IntermediateSpec {
  mount: PkiMountSpec;
  commonName: string;
  ttl: number;
  keyType: "ec" | "rsa";
  keyBits: number;
  issuerName: string;
}

export interface RoleSpec {
  mount: string;
  name: string;
  /** Exactly what is written to `<mount>/roles/<name>`, durations in seconds. */
  fields: Record<string, string | number | boolean | string[]>;
  /**
   * Auth mount whose accessor replaces ACCESSOR_PLACEHOLDER in `fields` (identity templates
   * that name the caller's entity alias on that mount), read from Vault when the step runs.
   */
  accessorOf?: string;
  /** For the step title: who signs with this role. */
  purpose: string;
}

/** Stands for an auth mount's accessor in templated role fields until the step reads it. */
export const ACCESSOR_PLACEHOLDER = "@ACCESSOR@";

export interface PolicySpec {
  name: string;
  access: PathAccess[];
  text: string;
}

interface AuthCommon {
  /** Mount path without `auth/`. */
  mount: string;
  role: string;
  policies: string[];
  /** Seconds. */
  tokenTtl: number;
  tokenMaxTtl: number;
  /** Who logs in with it, for messages ("meshvault server", "workloads"). */
  who: string;
}

export interface AppRoleSetup extends AuthCommon {
  method: "approle";
  /** Where a new secret_id is written (0600). */
  secretIdFile: string;
  /** Where the role_id is written, if anywhere (it is not secret on its own). */
  roleIdFile: string | undefined;
  /** Issue a new secret_id even when the one in secretIdFile still works. */
  newSecretId: boolean;
}

export interface KubernetesSetup extends AuthCommon {
  method: "kubernetes";
  /** API server URL for TokenReview; undefined = keep what Vault has (must be configured already). */
  kubernetesHost: string | undefined;
  kubernetesCaCertFile: string | undefined;
  tokenReviewerJwtFile: string | undefined;
  boundServiceAccountNames: string[];
  boundServiceAccountNamespaces: string[];
  audience: string | undefined;
}

export interface JwtSetup extends AuthCommon {
  method: "jwt";
  jwksUrl: string | undefined;
  /** PEM public key files (offline validation). */
  publicKeyFiles: string[];
  boundIssuer: string | undefined;
  boundAudiences: string[];
  boundSubject: string | undefined;
  userClaim: string;
  claimMappings: Record<string, string>;
}

export type AuthSetup = AppRoleSetup | KubernetesSetup | JwtSetup;

export interface KvFieldSource {
  field: string;
  file: string;
}
export interface KvSecretSpec {
  mount: string;
  path: string;
  version: 1 | 2;
  /** Fields to write, from PEM files; empty = only check the secret is there. */
  fields: KvFieldSource[];
  /** Fields the authority reads (must exist after setup). */
  requiredFields: string[];
}

export interface SetupSpec {
  authority: VaultAuthorityConfig;
  trustDomain: string;
  /** Base URL put in config/urls (issuing_certificates, crl_distribution_points). */
  publicAddress: string;
  /** Root CA mount (absent for vault-kv). */
  root: { mount: PkiMountSpec; source: RootSource } | undefined;
  /** vault-sign: the signing intermediate, signed by the root (absent with --sign-at-root). */
  intermediate: IntermediateSpec | undefined;
  /** vault-intermediate exported: an empty PKI mount meshvault fills itself. */
  emptyMounts: PkiMountSpec[];
  /** vault-sign: the role(s) meshvault and workloads sign with. */
  roles: RoleSpec[];
  policy: PolicySpec;
  workloadPolicy: PolicySpec | undefined;
  serverAuth: AuthSetup | undefined;
  workloadAuth: AuthSetup | undefined;
  kv: { mount: string; version: 1 | 2; secrets: KvSecretSpec[] } | undefined;
}
