// Configuration of everything Vault: the top-level `vault:` connection section and
// the three Vault-backed authorities (vault-sign, vault-kv, vault-intermediate).
// Shared with `meshvault vault setup` / `vault check`, which read the same names.
import { z } from "zod";
import { KEY_ALGORITHMS } from "../pki/keys.js";
import { DEFAULT_AUTH_MOUNTS, vaultConnectionFromEnv } from "../vault/config.js";
import type { Env, FromEnvOptions, VaultAuthConfig, VaultConnection } from "../vault/config.js";
import { VaultConfigError } from "../vault/errors.js";
import { parseKvReference } from "../vault/kv.js";
import { durationSchema } from "./duration-schema.js";

const duration = durationSchema(z);

const nonEmpty = z.string().min(1);

// ---- connection -----------------------------------------------------------

export const vaultAuthSchema = z.discriminatedUnion("method", [
  z
    .object({
      method: z.literal("token"),
      /** File holding the token, re-read at every login (e.g. a Vault Agent sink); else vault.token / VAULT_TOKEN. */
      tokenFile: nonEmpty.optional(),
    })
    .strict(),
  z
    .object({
      method: z.literal("approle"),
      mount: nonEmpty.default(DEFAULT_AUTH_MOUNTS.approle),
      // Each may also come from VAULT_ROLE_ID[_FILE] / VAULT_SECRET_ID[_FILE] (or BAO_*).
      roleId: nonEmpty.optional(),
      roleIdFile: nonEmpty.optional(),
      secretId: nonEmpty.optional(),
      secretIdFile: nonEmpty.optional(),
    })
    .strict(),
  z
    .object({
      method: z.literal("kubernetes"),
      mount: nonEmpty.default(DEFAULT_AUTH_MOUNTS.kubernetes),
      role: nonEmpty,
      /** Service-account token, re-read at every login; default the pod's projected token. */
      tokenFile: nonEmpty.optional(),
    })
    .strict(),
  z
    .object({
      method: z.literal("jwt"),
      mount: nonEmpty.default(DEFAULT_AUTH_MOUNTS.jwt),
      role: nonEmpty,
      /** File holding the JWT, re-read at every login. */
      tokenFile: nonEmpty,
    })
    .strict(),
]);
export type VaultAuthSection = z.output<typeof vaultAuthSchema>;

/** Top-level `vault:`. Everything optional: VAULT_* / BAO_* environment variables fill the gaps, this section wins. */
export const vaultSectionSchema = z
  .object({
    /** e.g. https://vault.example:8200 (VAULT_ADDR). */
    address: z
      .string()
      .regex(/^https?:\/\/[^/]+/, 'expected an http(s) URL like "https://vault.example:8200"')
      .optional(),
    /** X-Vault-Namespace (VAULT_NAMESPACE). */
    namespace: nonEmpty.optional(),
    /** PEM file of the CA that signed Vault's certificate (VAULT_CACERT). */
    caCert: nonEmpty.optional(),
    /** Directory of PEM CA files (VAULT_CAPATH). */
    caPath: nonEmpty.optional(),
    /** Client certificate / key for TLS client auth (VAULT_CLIENT_CERT / VAULT_CLIENT_KEY). */
    clientCert: nonEmpty.optional(),
    clientKey: nonEmpty.optional(),
    /** Name to verify in Vault's certificate (VAULT_TLS_SERVER_NAME). */
    tlsServerName: nonEmpty.optional(),
    /** Do not verify Vault's certificate: experiments only (VAULT_SKIP_VERIFY). */
    skipVerify: z.boolean().optional(),
    /** Token for `method: token` (VAULT_TOKEN). Prefer a file or the environment over the config file. */
    token: nonEmpty.optional(),
    /** How meshvault logs in; default from VAULT_AUTH_METHOD etc., else token. */
    auth: vaultAuthSchema.optional(),
  })
  .strict();
export type VaultSection = z.output<typeof vaultSectionSchema>;
export type VaultSectionInput = z.input<typeof vaultSectionSchema>;

/**
 * The VaultConnection for `section` (the config file's `vault:`), with VAULT_* /
 * BAO_* from `env` filling whatever the section leaves out. Config wins.
 */
export function vaultConnectionFromConfig(
  section: VaultSection | undefined,
  env: Env = process.env,
  options: FromEnvOptions = {},
): VaultConnection {
  const s = section ?? {};
  const pick = (name: string): string | undefined => {
    const v = env[`BAO_${name}`] || env[`VAULT_${name}`];
    return v === "" ? undefined : v;
  };
  let auth: VaultAuthConfig | undefined;
  const a = s.auth;
  if (a) {
    switch (a.method) {
      case "token":
        auth = { method: "token", token: s.token ?? pick("TOKEN"), tokenFile: a.tokenFile };
        break;
      case "approle": {
        // role_id / secret_id often come from the environment or a mounted file; fill gaps from env.
        const fromFileOrValue = (v: string | undefined, f: string | undefined, envName: string) =>
          v === undefined && f === undefined ? { v: pick(envName), f: pick(`${envName}_FILE`) } : { v, f };
        const role = fromFileOrValue(a.roleId, a.roleIdFile, "ROLE_ID");
        const secret = fromFileOrValue(a.secretId, a.secretIdFile, "SECRET_ID");
        if (role.v === undefined && role.f === undefined) {
          throw new VaultConfigError(
            `vault.auth (approle) needs a role_id: set vault.auth.roleId or roleIdFile, or VAULT_ROLE_ID / VAULT_ROLE_ID_FILE`,
            { address: s.address ?? "(config)" },
          );
        }
        auth = {
          method: "approle",
          mount: a.mount,
          roleId: role.v,
          roleIdFile: role.f,
          secretId: secret.v,
          secretIdFile: secret.f,
        };
        break;
      }
      case "kubernetes":
        auth = { method: "kubernetes", mount: a.mount, role: a.role, tokenFile: a.tokenFile };
        break;
      case "jwt":
        auth = { method: "jwt", mount: a.mount, role: a.role, tokenFile: a.tokenFile };
        break;
    }
  }
  return vaultConnectionFromEnv(
    env,
    {
      address: s.address,
      namespace: s.namespace,
      caCert: s.caCert,
      caPath: s.caPath,
      clientCert: s.clientCert,
      clientKey: s.clientKey,
      tlsServerName: s.tlsServerName,
      skipVerify: s.skipVerify,
      token: s.token,
      auth,
    },
    options,
  );
}

// ---- authorities ----------------------------------------------------------

const mountName = z
  .string()
  .min(1)
  .transform((m) => m.replace(/^\/+|\/+$/g, ""))
  .refine((m) => m.length > 0 && !m.split("/").some((s) => s === "" || s === "." || s === ".."), {
    message: 'expected a mount path like "pki_int"',
  });

/** A per-workload Vault login (identity: workload): the caller's own token on a kubernetes or jwt role. */
export const workloadAuthSchema = z.discriminatedUnion("method", [
  z
    .object({
      method: z.literal("kubernetes"),
      mount: mountName.default(DEFAULT_AUTH_MOUNTS.kubernetes),
      role: nonEmpty,
    })
    .strict(),
  z
    .object({
      method: z.literal("jwt"),
      mount: mountName.default(DEFAULT_AUTH_MOUNTS.jwt),
      role: nonEmpty,
    })
    .strict(),
]);
export type WorkloadAuthConfig = z.output<typeof workloadAuthSchema>;

/** Seed 000: every workload CSR is signed by Vault at `<mount>/sign/<role>`. */
export const vaultSignAuthoritySchema = z
  .object({
    type: z.literal("vault-sign"),
    mount: mountName.default("pki_int"),
    role: nonEmpty.default("meshvault-workload"),
    /** server: meshvault's own Vault login signs; workload: a Vault login made with the caller's token. */
    identity: z.enum(["server", "workload"]).default("server"),
    workloadAuth: workloadAuthSchema.optional(),
    excludeCnFromSans: z.boolean().default(true),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.identity === "workload" && !c.workloadAuth) {
      ctx.addIssue({
        code: "custom",
        path: ["workloadAuth"],
        message:
          "identity: workload needs workloadAuth: {method: kubernetes|jwt, mount, role}, the Vault role the callers' tokens log in to",
      });
    }
  });

const kvRef = (requireField: boolean) =>
  z.string().superRefine((ref, ctx) => {
    try {
      parseKvReference(ref, { requireField });
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
    }
  });

/** Seed 001: CA certificate and key kept in Vault KV (v2 or v1), hot-reloaded on a new version. */
export const vaultKvAuthoritySchema = z
  .object({
    type: z.literal("vault-kv"),
    certificate: kvRef(true),
    privateKey: kvRef(true),
    chain: kvRef(true).optional(),
    root: kvRef(true).optional(),
    pollInterval: duration.default(30),
  })
  .strict();

/** Seeds 002 (csr) and 003 (exported): an intermediate CA signed by Vault's root mount, renewed and hot-swapped. */
export const vaultIntermediateAuthoritySchema = z
  .object({
    type: z.literal("vault-intermediate"),
    /** csr: key made here, in memory only; exported: Vault generates it at intermediateMount and holds the cert too. */
    mode: z.enum(["csr", "exported"]).default("csr"),
    rootMount: mountName.default("pki"),
    /** Used by mode exported only. */
    intermediateMount: mountName.default("pki_int"),
    ttl: duration.default(720 * 3600),
    /** Renew when this fraction of the intermediate's lifetime has elapsed (seed 002: 360h of 720h). */
    renewAt: z.number().gt(0).lt(1).default(0.5),
    /** Default "meshvault intermediate CA (<trust domain>)". */
    commonName: nonEmpty.optional(),
    keyAlgorithm: z.enum(KEY_ALGORITHMS as [string, ...string[]]).default("ec-p256"),
  })
  .strict();

export type VaultSignAuthorityConfig = z.output<typeof vaultSignAuthoritySchema>;
export type VaultKvAuthorityConfig = z.output<typeof vaultKvAuthoritySchema>;
export type VaultIntermediateAuthorityConfig = z.output<typeof vaultIntermediateAuthoritySchema>;
