// Flags (+ the server config when -c is given) -> SetupSpec. Pure: reads no
// files and calls no Vault, so --dry-run and tests can use it freely.

import type { ServerConfig } from "../../config/schema.js";
import { parseDuration } from "../../config/duration.js";
import {
  vaultIntermediateAuthoritySchema,
  vaultKvAuthoritySchema,
  vaultSignAuthoritySchema,
  type VaultSection,
} from "../../config/vault-schema.js";
import { validateTrustDomain } from "../../pki/spiffe.js";
import { DEFAULT_AUTH_MOUNTS } from "../config.js";
import { parseKvReference } from "../kv.js";
import {
  DEFAULT_WORKLOAD_POLICY,
  VAULT_MODES,
  defaultPolicyName,
  renderPolicy,
  serverAccess,
  servingRoleName,
  workloadAccess,
  type VaultAuthorityConfig,
  type VaultMode,
} from "./access.js";
import {
  ACCESSOR_PLACEHOLDER,
  type AuthSetup,
  type KvSecretSpec,
  type RoleSpec,
  type RootSource,
  type SetupSpec,
} from "./spec.js";

export class SetupConfigError extends Error {
  override name = "SetupConfigError";
}

/** Command-line flags of `meshvault vault setup` (all optional; the config file fills gaps). */
export interface SetupFlags {
  mode?: string;
  trustDomain?: string;
  /** vault-sign: signing mount; vault-intermediate: ignored (see rootMount / intermediateMount). */
  mount?: string;
  role?: string;
  identity?: string;
  intermediateMode?: string;
  rootMount?: string;
  intermediateMount?: string;
  signAtRoot?: boolean;
  importRoot?: string;
  rootCommonName?: string;
  rootTtl?: string;
  intermediateTtl?: string;
  keyType?: string;
  maxTtl?: string;
  publicAddress?: string;
  policy?: string;
  // server auth
  auth?: string;
  authMount?: string;
  authRole?: string;
  tokenTtl?: string;
  secretIdFile?: string;
  roleIdFile?: string;
  newSecretId?: boolean;
  kubernetesHost?: string;
  kubernetesCaCert?: string;
  tokenReviewerJwtFile?: string;
  boundSaNames?: string[];
  boundSaNamespaces?: string[];
  audience?: string;
  jwksUrl?: string;
  jwtPublicKey?: string[];
  boundIssuer?: string;
  boundSubject?: string;
  // identity: workload
  workloadAuth?: string;
  workloadAuthMount?: string;
  workloadAuthRole?: string;
  workloadSaNamespaces?: string[];
  workloadAudience?: string;
  // vault-kv
  kvPath?: string;
  caCert?: string;
  caKey?: string;
  chain?: string;
  root?: string;
}

export interface ResolveContext {
  /** Vault address in use (default for config/urls). */
  vaultAddress: string;
  /** The parsed server config when -c was given. */
  config?: ServerConfig | undefined;
}

const DEFAULT_SERVING_DNS = ["istiod.istio-system.svc", "meshvault.istio-system.svc", "localhost"];

function seconds(flag: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  try {
    return parseDuration(v);
  } catch (e) {
    throw new SetupConfigError(`--${flag}: ${(e as Error).message}`);
  }
}

function keySpec(keyType: string | undefined): { keyType: "ec" | "rsa"; keyBits: number } {
  switch (keyType ?? "ec-p256") {
    case "ec":
    case "ec-p256":
      return { keyType: "ec", keyBits: 256 };
    case "ec-p384":
      return { keyType: "ec", keyBits: 384 };
    case "rsa":
    case "rsa-2048":
      return { keyType: "rsa", keyBits: 2048 };
    case "rsa-3072":
      return { keyType: "rsa", keyBits: 3072 };
    case "rsa-4096":
      return { keyType: "rsa", keyBits: 4096 };
    default:
      throw new SetupConfigError(
        `--key-type ${JSON.stringify(keyType)} is not supported: use ec-p256, ec-p384, rsa-2048, rsa-3072 or rsa-4096`,
      );
  }
}

function zodMessage(e: { issues: { path: PropertyKey[]; message: string }[] }): string {
  return e.issues.map((i) => `${i.path.map(String).join(".") || "(authority)"}: ${i.message}`).join("; ");
}

/** The authority section setup works for: the config's, or one built from flags with the same defaults. */
export function resolveAuthority(flags: SetupFlags, config: ServerConfig | undefined): VaultAuthorityConfig {
  const fromConfig = config?.authority;
  if (fromConfig && VAULT_MODES.includes(fromConfig.type as VaultMode)) {
    const a = fromConfig as VaultAuthorityConfig;
    if (flags.mode !== undefined && flags.mode !== a.type) {
      throw new SetupConfigError(
        `--mode ${flags.mode} contradicts the config file's authority.type ${a.type}: drop --mode or fix the config`,
      );
    }
    return a;
  }
  const mode = flags.mode;
  if (mode === undefined) {
    throw new SetupConfigError(
      fromConfig
        ? `the config file's authority.type is ${fromConfig.type}, which does not use Vault: pass --mode vault-sign|vault-kv|vault-intermediate`
        : `choose a mode: --mode vault-sign|vault-kv|vault-intermediate (or -c server-config.yaml)`,
    );
  }
  const raw: Record<string, unknown> = { type: mode };
  const set = (k: string, v: unknown) => {
    if (v !== undefined) raw[k] = v;
  };
  let parsed;
  switch (mode) {
    case "vault-sign": {
      set("mount", flags.signAtRoot ? (flags.rootMount ?? flags.mount ?? "pki") : flags.mount);
      set("role", flags.role);
      set("identity", flags.identity);
      if (flags.identity === "workload") {
        raw["workloadAuth"] = {
          method: flags.workloadAuth ?? "kubernetes",
          ...(flags.workloadAuthMount ? { mount: flags.workloadAuthMount } : {}),
          role: flags.workloadAuthRole ?? "meshvault-workload",
        };
      }
      parsed = vaultSignAuthoritySchema.safeParse(raw);
      break;
    }
    case "vault-kv": {
      const base = (flags.kvPath ?? "vault:secret/data/pki/istiod").replace(/#.*$/, "");
      raw["certificate"] = `${base}#certificate`;
      raw["privateKey"] = `${base}#privateKey`;
      if (flags.chain) raw["chain"] = `${base}#chain`;
      if (flags.root) raw["root"] = `${base}#root`;
      parsed = vaultKvAuthoritySchema.safeParse(raw);
      break;
    }
    case "vault-intermediate":
      set("mode", flags.intermediateMode);
      set("rootMount", flags.rootMount);
      set("intermediateMount", flags.intermediateMount);
      parsed = vaultIntermediateAuthoritySchema.safeParse(raw);
      break;
    default:
      throw new SetupConfigError(
        `--mode ${mode} is not a Vault mode: use vault-sign, vault-kv or vault-intermediate`,
      );
  }
  if (!parsed.success) throw new SetupConfigError(`invalid flags for ${mode}: ${zodMessage(parsed.error)}`);
  return parsed.data as VaultAuthorityConfig;
}

function csv(v: string[] | undefined, fallback: string[]): string[] {
  const out = (v ?? [])
    .flatMap((s) => s.split(","))
    .map((s) => s.trim())
    .filter(Boolean);
  return out.length ? out : fallback;
}

function serverAuthSetup(
  flags: SetupFlags,
  section: VaultSection | undefined,
  policies: string[],
  servingNamespace: string,
  servingServiceAccount: string,
): AuthSetup | undefined {
  const cfg = section?.auth;
  const method = flags.auth ?? cfg?.method;
  if (method === undefined || method === "none" || method === "token") return undefined;
  if (cfg && flags.auth && cfg.method !== flags.auth) {
    throw new SetupConfigError(
      `--auth ${flags.auth} contradicts the config file's vault.auth.method ${cfg.method}: drop --auth or fix the config`,
    );
  }
  const common = {
    policies,
    tokenTtl: seconds("token-ttl", flags.tokenTtl, 3600),
    tokenMaxTtl: 24 * 3600,
    who: "meshvault server",
  };
  switch (method) {
    case "approle": {
      const c = cfg?.method === "approle" ? cfg : undefined;
      const secretIdFile = flags.secretIdFile ?? c?.secretIdFile;
      if (!secretIdFile) {
        throw new SetupConfigError(
          `approle needs a file to write the secret_id to: pass --secret-id-file <path> (or set vault.auth.secretIdFile)`,
        );
      }
      return {
        ...common,
        method: "approle",
        mount: flags.authMount ?? c?.mount ?? DEFAULT_AUTH_MOUNTS.approle,
        role: flags.authRole ?? "meshvault",
        secretIdFile,
        roleIdFile: flags.roleIdFile ?? c?.roleIdFile,
        newSecretId: flags.newSecretId === true,
      };
    }
    case "kubernetes": {
      const c = cfg?.method === "kubernetes" ? cfg : undefined;
      return {
        ...common,
        method: "kubernetes",
        mount: flags.authMount ?? c?.mount ?? DEFAULT_AUTH_MOUNTS.kubernetes,
        role: flags.authRole ?? c?.role ?? "meshvault",
        kubernetesHost: flags.kubernetesHost,
        kubernetesCaCertFile: flags.kubernetesCaCert,
        tokenReviewerJwtFile: flags.tokenReviewerJwtFile,
        boundServiceAccountNames: csv(flags.boundSaNames, [servingServiceAccount]),
        boundServiceAccountNamespaces: csv(flags.boundSaNamespaces, [servingNamespace]),
        audience: flags.audience,
      };
    }
    case "jwt": {
      const c = cfg?.method === "jwt" ? cfg : undefined;
      return {
        ...common,
        method: "jwt",
        mount: flags.authMount ?? c?.mount ?? DEFAULT_AUTH_MOUNTS.jwt,
        role: flags.authRole ?? c?.role ?? "meshvault",
        jwksUrl: flags.jwksUrl,
        publicKeyFiles: flags.jwtPublicKey ?? [],
        boundIssuer: flags.boundIssuer,
        boundAudiences: csv(flags.audience ? [flags.audience] : undefined, []),
        boundSubject: flags.boundSubject,
        userClaim: "sub",
        claimMappings: {},
      };
    }
    default:
      throw new SetupConfigError(`--auth ${method} is not supported: use approle, kubernetes, jwt or none`);
  }
}

function workloadAuthSetup(
  flags: SetupFlags,
  authority: VaultAuthorityConfig,
  policies: string[],
): AuthSetup | undefined {
  if (authority.type !== "vault-sign" || authority.identity !== "workload" || !authority.workloadAuth)
    return undefined;
  const w = authority.workloadAuth;
  const common = {
    mount: w.mount,
    role: w.role,
    policies,
    // Short: the server caches one Vault token per workload identity until it expires.
    tokenTtl: 15 * 60,
    tokenMaxTtl: 3600,
    who: "workloads",
  };
  // Istio's agent sends a projected token with audience istio-ca (WIRE-FACTS).
  const audience = flags.workloadAudience ?? "istio-ca";
  if (w.method === "kubernetes") {
    return {
      ...common,
      method: "kubernetes",
      kubernetesHost: flags.kubernetesHost,
      kubernetesCaCertFile: flags.kubernetesCaCert,
      tokenReviewerJwtFile: flags.tokenReviewerJwtFile,
      boundServiceAccountNames: ["*"],
      boundServiceAccountNamespaces: csv(flags.workloadSaNamespaces, ["*"]),
      audience,
    };
  }
  return {
    ...common,
    method: "jwt",
    jwksUrl: flags.jwksUrl,
    publicKeyFiles: flags.jwtPublicKey ?? [],
    boundIssuer: flags.boundIssuer,
    boundAudiences: [audience],
    boundSubject: undefined,
    userClaim: "sub",
    // Kubernetes service-account JWTs name the namespace and account here; mapped into token metadata for audit.
    claimMappings: {
      "/kubernetes.io/namespace": "service_account_namespace",
      "/kubernetes.io/serviceaccount/name": "service_account_name",
    },
  };
}

function kvSpec(flags: SetupFlags, authority: VaultAuthorityConfig): SetupSpec["kv"] {
  if (authority.type !== "vault-kv") return undefined;
  const refs: { ref: string | undefined; file: string | undefined }[] = [
    { ref: authority.certificate, file: flags.caCert },
    { ref: authority.privateKey, file: flags.caKey },
    { ref: authority.chain, file: flags.chain },
    { ref: authority.root, file: flags.root },
  ];
  if ((flags.caCert === undefined) !== (flags.caKey === undefined)) {
    throw new SetupConfigError(`--ca-cert and --ca-key go together: the key must match the certificate`);
  }
  const secrets = new Map<string, KvSecretSpec>();
  let mount: string | undefined;
  let version: 1 | 2 = 2;
  for (const { ref, file } of refs) {
    if (ref === undefined) {
      if (file !== undefined) {
        throw new SetupConfigError(
          `a file was given for a field the config does not reference: add authority.chain / authority.root to the config, or drop the flag`,
        );
      }
      continue;
    }
    const r = parseKvReference(ref, { requireField: true });
    if (mount !== undefined && r.mount !== mount) {
      throw new SetupConfigError(
        `vault-kv references use two KV mounts (${mount}, ${r.mount}): setup supports one`,
      );
    }
    mount = r.mount;
    version = r.version;
    const key = `${r.mount}/${r.path}`;
    const s = secrets.get(key) ?? {
      mount: r.mount,
      path: r.path,
      version: r.version,
      fields: [],
      requiredFields: [],
    };
    s.requiredFields.push(r.field!);
    if (file !== undefined) s.fields.push({ field: r.field!, file });
    secrets.set(key, s);
  }
  return { mount: mount ?? "secret", version, secrets: [...secrets.values()] };
}

/** The whole desired state. Throws SetupConfigError naming the flag or field to fix. */
export function resolveSetup(flags: SetupFlags, ctx: ResolveContext): SetupSpec {
  const config = ctx.config;
  const authority = resolveAuthority(flags, config);
  const trustDomain = flags.trustDomain ?? config?.trustDomain ?? "cluster.local";
  try {
    validateTrustDomain(trustDomain);
  } catch (e) {
    throw new SetupConfigError(`--trust-domain: ${(e as Error).message}`);
  }
  const publicAddress = (flags.publicAddress ?? ctx.vaultAddress).replace(/\/+$/, "");
  const keys = keySpec(flags.keyType);
  const rootTtl = seconds("root-ttl", flags.rootTtl, 87600 * 3600);
  const rootSource: RootSource = flags.importRoot
    ? { kind: "import", bundleFile: flags.importRoot }
    : {
        kind: "generate",
        commonName: flags.rootCommonName ?? `meshvault root CA (${trustDomain})`,
        ttl: rootTtl,
        ...keys,
        issuerName: "meshvault-root",
      };

  let root: SetupSpec["root"];
  let intermediate: SetupSpec["intermediate"];
  const emptyMounts: SetupSpec["emptyMounts"] = [];
  const roles: RoleSpec[] = [];
  if (authority.type === "vault-sign") {
    const signAtRoot = flags.signAtRoot === true;
    const rootMount = signAtRoot ? authority.mount : (flags.rootMount ?? "pki");
    if (!signAtRoot && rootMount === authority.mount) {
      throw new SetupConfigError(
        `the root mount and the signing mount are both ${rootMount}: pass --sign-at-root to sign workloads at the root, or choose another --root-mount`,
      );
    }
    root = { mount: { path: rootMount, maxLeaseTtl: Math.max(rootTtl, 87600 * 3600) }, source: rootSource };
    if (!signAtRoot) {
      const ttl = seconds("intermediate-ttl", flags.intermediateTtl, 43800 * 3600);
      intermediate = {
        mount: { path: authority.mount, maxLeaseTtl: ttl },
        commonName: `meshvault signing CA (${trustDomain})`,
        ttl,
        ...keys,
        issuerName: "meshvault-intermediate",
      };
    }
    const maxTtl = seconds("max-ttl", flags.maxTtl, config?.certificates.maxTtl ?? 90 * 86400);
    const common = {
      allow_any_name: false,
      enforce_hostnames: true,
      require_cn: false,
      // The identity comes from meshvault's authentication (or the caller's own Vault login),
      // never from the CSR: Vault ignores the CSR's SANs and CN, whatever attributes hide them.
      use_csr_common_name: false,
      use_csr_sans: false,
      key_type: "any",
      // keyEncipherment is for RSA keys only (RFC 8813, RFC 8410) and the role serves every key type.
      key_usage: ["DigitalSignature"],
      ext_key_usage: ["ServerAuth", "ClientAuth"],
      server_flag: true,
      client_flag: true,
      // Istio leaves carry CA:false.
      basic_constraints_valid_for_non_ca: true,
      // High volume, short-lived: do not store every leaf in Vault's storage.
      no_store: true,
      max_ttl: maxTtl,
    };
    const servingId = `spiffe://${trustDomain}/ns/${config?.servingCertificate.namespace ?? "istio-system"}/sa/${config?.servingCertificate.serviceAccount ?? "meshvault"}`;
    const serving = (uris: string[]): RoleSpec["fields"] => ({
      allowed_uri_sans: uris,
      allowed_uri_sans_template: false,
      // The server's own serving certificate: exactly its DNS names, nothing else.
      allowed_domains: config?.servingCertificate.dnsNames ?? DEFAULT_SERVING_DNS,
      allow_bare_domains: true,
      allow_subdomains: false,
      allow_glob_domains: false,
      allow_wildcard_certificates: false,
      allow_localhost: true,
      allow_ip_sans: true,
      ...common,
    });
    if (authority.identity === "workload" && authority.workloadAuth) {
      // Vault itself signs only the caller's own ID: the URI SAN is templated on the
      // namespace and service account of the caller's alias on the workload auth mount
      // (kubernetes auth sets them; the jwt role maps them from the token's claims).
      const alias = `identity.entity.aliases.${ACCESSOR_PLACEHOLDER}.metadata`;
      roles.push({
        mount: authority.mount,
        name: authority.role,
        purpose: "per-workload",
        accessorOf: authority.workloadAuth.mount,
        fields: {
          allowed_uri_sans: [
            `spiffe://${trustDomain}/ns/{{${alias}.service_account_namespace}}/sa/{{${alias}.service_account_name}}`,
          ],
          allowed_uri_sans_template: true,
          // No DNS or IP SANs and no CN for a workload, whatever it asks for.
          allowed_domains: [],
          allow_bare_domains: false,
          allow_subdomains: false,
          allow_glob_domains: false,
          allow_wildcard_certificates: false,
          allow_localhost: false,
          allow_ip_sans: false,
          ...common,
        },
      });
      roles.push({
        mount: authority.mount,
        name: servingRoleName(authority.role),
        purpose: "serving-certificate",
        fields: serving([servingId]),
      });
    } else {
      roles.push({
        mount: authority.mount,
        name: authority.role,
        purpose: "workload",
        fields: serving([`spiffe://${trustDomain}/*`]),
      });
    }
  } else if (authority.type === "vault-intermediate") {
    const ttl = authority.ttl;
    root = { mount: { path: authority.rootMount, maxLeaseTtl: Math.max(rootTtl, ttl) }, source: rootSource };
    if (authority.mode === "exported") {
      emptyMounts.push({ path: authority.intermediateMount, maxLeaseTtl: Math.max(ttl, 87600 * 3600) });
    }
  }

  const policyName = flags.policy ?? defaultPolicyName(authority.type);
  const access = serverAccess(authority);
  const policy = { name: policyName, access, text: renderPolicy(policyName, authority.type, access) };
  const wAccess = workloadAccess(authority);
  const workloadPolicy = wAccess.length
    ? {
        name: DEFAULT_WORKLOAD_POLICY,
        access: wAccess,
        text: renderPolicy(DEFAULT_WORKLOAD_POLICY, authority.type, wAccess),
      }
    : undefined;

  return {
    authority,
    trustDomain,
    publicAddress,
    root,
    intermediate,
    emptyMounts,
    roles,
    policy,
    workloadPolicy,
    serverAuth: serverAuthSetup(
      flags,
      config?.vault,
      [policyName],
      config?.servingCertificate.namespace ?? "istio-system",
      config?.servingCertificate.serviceAccount ?? "meshvault",
    ),
    workloadAuth: workloadPolicy ? workloadAuthSetup(flags, authority, [workloadPolicy.name]) : undefined,
    kv: kvSpec(flags, authority),
  };
}
