// How meshvault finds and talks to Vault: one typed connection config built
// from the environment (like the vault / bao CLIs) and the config file.

import { VaultConfigError } from "./errors.js";

/** Default mount paths, as `vault auth enable <method>` creates them. */
export const DEFAULT_AUTH_MOUNTS = {
  kubernetes: "kubernetes",
  approle: "approle",
  jwt: "jwt",
} as const;

/** Where a pod's projected service-account token lives. */
export const DEFAULT_SA_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token";

export interface TokenAuthConfig {
  method: "token";
  /** The token itself (VAULT_TOKEN). */
  token?: string | undefined;
  /** Or a file holding it, re-read at every login (e.g. a Vault Agent sink). */
  tokenFile?: string | undefined;
}
export interface KubernetesAuthConfig {
  method: "kubernetes";
  mount?: string | undefined;
  role: string;
  /** Service-account token, read at every login. Default DEFAULT_SA_TOKEN_FILE. */
  tokenFile?: string | undefined;
}
export interface AppRoleAuthConfig {
  method: "approle";
  mount?: string | undefined;
  roleId?: string | undefined;
  roleIdFile?: string | undefined;
  secretId?: string | undefined;
  secretIdFile?: string | undefined;
}
export interface JwtAuthConfig {
  method: "jwt";
  mount?: string | undefined;
  role: string;
  /** File holding the JWT, read at every login. */
  tokenFile: string;
}
export type VaultAuthConfig = TokenAuthConfig | KubernetesAuthConfig | AppRoleAuthConfig | JwtAuthConfig;
export type VaultAuthMethodName = VaultAuthConfig["method"];

export interface VaultConnection {
  /** e.g. https://vault.example:8200 (no /v1 suffix). */
  address: string;
  /** PEM file of the CA(s) that signed Vault's certificate. */
  caCert?: string | undefined;
  /** Directory of PEM files, all trusted. */
  caPath?: string | undefined;
  /** Client certificate/key for TLS client auth (VAULT_CLIENT_CERT / VAULT_CLIENT_KEY). */
  clientCert?: string | undefined;
  clientKey?: string | undefined;
  /** SNI / name to verify, when it differs from the host in `address`. */
  tlsServerName?: string | undefined;
  /** Sent as X-Vault-Namespace (Vault Enterprise / OpenBao namespaces). */
  namespace?: string | undefined;
  /** Do not verify Vault's certificate. For experiments only; warns. */
  skipVerify: boolean;
  auth: VaultAuthConfig;
  /** Per-attempt timeout. Default 30 s (VAULT_CLIENT_TIMEOUT, seconds). */
  timeoutMs?: number | undefined;
  /** Attempts per request including the first. Default 4 (VAULT_MAX_RETRIES + 1). */
  maxAttempts?: number | undefined;
}

/** Values from the config file (or flags); any field given here wins over the environment. */
export interface VaultConnectionOverrides {
  address?: string | undefined;
  token?: string | undefined;
  caCert?: string | undefined;
  caPath?: string | undefined;
  clientCert?: string | undefined;
  clientKey?: string | undefined;
  tlsServerName?: string | undefined;
  namespace?: string | undefined;
  skipVerify?: boolean | undefined;
  auth?: VaultAuthConfig | undefined;
  timeoutMs?: number | undefined;
  maxAttempts?: number | undefined;
}

/**
 * Precedence, highest first. Exported so the README and `meshvault vault check`
 * state the same thing the code does.
 *  1. the config file / command-line flags (`overrides`)
 *  2. BAO_* environment variables (an explicit OpenBao setting is the more specific one,
 *     and it is what the bao CLI reads first)
 *  3. VAULT_* environment variables
 *  4. defaults (address http://127.0.0.1:8200, token auth)
 * When BAO_X and VAULT_X are both set and differ, a warning names both.
 */
export const VAULT_CONFIG_PRECEDENCE = [
  "config file / flags",
  "BAO_* environment",
  "VAULT_* environment",
  "defaults",
] as const;

export const DEFAULT_VAULT_ADDR = "http://127.0.0.1:8200";

/** Environment variable suffixes read (each as VAULT_<name> and BAO_<name>). */
export const VAULT_ENV_NAMES = [
  "ADDR",
  "TOKEN",
  "CACERT",
  "CAPATH",
  "CLIENT_CERT",
  "CLIENT_KEY",
  "TLS_SERVER_NAME",
  "NAMESPACE",
  "SKIP_VERIFY",
  "CLIENT_TIMEOUT",
  "MAX_RETRIES",
  // meshvault's own (seed 000 uses VAULT_AUTH_PATH):
  "AUTH_METHOD",
  "AUTH_PATH",
  "AUTH_ROLE",
  "AUTH_TOKEN_FILE",
  "ROLE_ID",
  "ROLE_ID_FILE",
  "SECRET_ID",
  "SECRET_ID_FILE",
] as const;
export type VaultEnvName = (typeof VAULT_ENV_NAMES)[number];

export type Env = Readonly<Record<string, string | undefined>>;

/** Read BAO_<name>, else VAULT_<name>; warn when both are set and differ (secrets are not echoed). */
function envValue(env: Env, name: VaultEnvName, warn: (m: string) => void): string | undefined {
  const bao = nonEmpty(env[`BAO_${name}`]);
  const vault = nonEmpty(env[`VAULT_${name}`]);
  if (bao !== undefined && vault !== undefined && bao !== vault) {
    const secret = name === "TOKEN" || name === "SECRET_ID";
    warn(
      `both BAO_${name} and VAULT_${name} are set and differ${secret ? "" : ` (${bao} vs ${vault})`}; using BAO_${name}`,
    );
  }
  return bao ?? vault;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === "" ? undefined : v;
}

function parseBool(name: string, v: string): boolean {
  // Same spellings Go's strconv.ParseBool accepts, which the vault CLI uses.
  if (["1", "t", "T", "true", "TRUE", "True"].includes(v)) return true;
  if (["0", "f", "F", "false", "FALSE", "False"].includes(v)) return false;
  throw new VaultConfigError(`${name}=${JSON.stringify(v)} is not a boolean: use true or false`, {
    address: "(config)",
  });
}

function parseDurationMs(name: string, v: string): number {
  // VAULT_CLIENT_TIMEOUT: seconds ("60") or a Go-style duration ("60s", "2m").
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) {
    throw new VaultConfigError(
      `${name}=${JSON.stringify(v)} is not a duration: use seconds (60) or 60s / 2m`,
      {
        address: "(config)",
      },
    );
  }
  const n = Number(m[1]);
  const unit = m[2] ?? "s";
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit as "ms" | "s" | "m" | "h"]);
}

export interface FromEnvOptions {
  /** Where warnings go (VAULT_SKIP_VERIFY, conflicting BAO_/VAULT_). Default: console.warn. */
  warn?: (message: string) => void;
}

/**
 * Build the connection from the environment, then apply `overrides` (the
 * config file) on top: see VAULT_CONFIG_PRECEDENCE.
 *
 * Auth from the environment: VAULT_AUTH_METHOD (token|kubernetes|approle|jwt;
 * default approle when a role id is given, else token), VAULT_AUTH_PATH (mount),
 * VAULT_AUTH_ROLE, VAULT_AUTH_TOKEN_FILE (kubernetes/jwt token file),
 * VAULT_ROLE_ID[_FILE], VAULT_SECRET_ID[_FILE]; all also as BAO_*.
 */
export function vaultConnectionFromEnv(
  env: Env = process.env,
  overrides: VaultConnectionOverrides = {},
  options: FromEnvOptions = {},
): VaultConnection {
  const warn = options.warn ?? ((m: string) => console.warn(`meshvault: ${m}`));
  const e = (n: VaultEnvName) => envValue(env, n, warn);

  const address = (overrides.address ?? e("ADDR") ?? DEFAULT_VAULT_ADDR).replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]+/.test(address)) {
    throw new VaultConfigError(
      `Vault address ${JSON.stringify(address)} is not an http(s) URL: set VAULT_ADDR like https://vault.example:8200`,
      { address },
    );
  }
  const skipEnv = e("SKIP_VERIFY");
  const skipVerify =
    overrides.skipVerify ?? (skipEnv !== undefined ? parseBool("VAULT_SKIP_VERIFY", skipEnv) : false);
  if (skipVerify && address.startsWith("https:")) {
    warn(
      `TLS verification of Vault at ${address} is disabled (VAULT_SKIP_VERIFY): anyone on the path can impersonate Vault, ` +
        `which is the mesh's root of trust. Set VAULT_CACERT instead.`,
    );
  }
  const timeoutEnv = e("CLIENT_TIMEOUT");
  const retriesEnv = e("MAX_RETRIES");
  let maxAttempts = overrides.maxAttempts;
  if (maxAttempts === undefined && retriesEnv !== undefined) {
    const r = Number(retriesEnv);
    if (!Number.isInteger(r) || r < 0) {
      throw new VaultConfigError(
        `VAULT_MAX_RETRIES=${JSON.stringify(retriesEnv)} must be a whole number >= 0`,
        {
          address,
        },
      );
    }
    maxAttempts = r + 1;
  }

  const auth = overrides.auth ?? authFromEnv(env, overrides.token, address, warn);
  // A token from the config file also fills token auth built from the env.
  if (auth.method === "token" && overrides.token !== undefined) auth.token = overrides.token;

  return {
    address,
    caCert: overrides.caCert ?? e("CACERT"),
    caPath: overrides.caPath ?? e("CAPATH"),
    clientCert: overrides.clientCert ?? e("CLIENT_CERT"),
    clientKey: overrides.clientKey ?? e("CLIENT_KEY"),
    tlsServerName: overrides.tlsServerName ?? e("TLS_SERVER_NAME"),
    namespace: overrides.namespace ?? e("NAMESPACE"),
    skipVerify,
    auth,
    timeoutMs:
      overrides.timeoutMs ??
      (timeoutEnv !== undefined ? parseDurationMs("VAULT_CLIENT_TIMEOUT", timeoutEnv) : undefined),
    maxAttempts,
  };
}

function authFromEnv(
  env: Env,
  tokenOverride: string | undefined,
  address: string,
  warn: (m: string) => void,
): VaultAuthConfig {
  const e = (n: VaultEnvName) => envValue(env, n, warn);
  const roleId = e("ROLE_ID");
  const roleIdFile = e("ROLE_ID_FILE");
  const explicit = e("AUTH_METHOD");
  const method = explicit ?? (roleId !== undefined || roleIdFile !== undefined ? "approle" : "token");
  const mount = e("AUTH_PATH");
  const role = e("AUTH_ROLE");
  const tokenFile = e("AUTH_TOKEN_FILE");
  const need = (what: string, v: string | undefined): string => {
    if (v === undefined) {
      throw new VaultConfigError(
        `${method} auth needs ${what}: set VAULT_${what} (or BAO_${what}) or the config file`,
        {
          address,
        },
      );
    }
    return v;
  };
  switch (method) {
    case "token":
      return { method: "token", token: tokenOverride ?? e("TOKEN"), tokenFile };
    case "kubernetes":
      return { method: "kubernetes", mount, role: need("AUTH_ROLE", role), tokenFile };
    case "jwt":
      return {
        method: "jwt",
        mount,
        role: need("AUTH_ROLE", role),
        tokenFile: need("AUTH_TOKEN_FILE", tokenFile),
      };
    case "approle":
      return {
        method: "approle",
        mount,
        roleId,
        roleIdFile,
        secretId: e("SECRET_ID"),
        secretIdFile: e("SECRET_ID_FILE"),
      };
    default:
      throw new VaultConfigError(
        `VAULT_AUTH_METHOD=${JSON.stringify(method)} is not supported: use token, kubernetes, approle or jwt`,
        { address },
      );
  }
}
