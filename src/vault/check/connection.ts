// Reachability, TLS, seal state and login: each stops the diagnosis when it
// fails, since nothing after it can be learnt.

import { authMethodFromConfig, type LoginResult } from "../auth.js";
import type { VaultClient } from "../client.js";
import type { VaultConnection } from "../config.js";
import { VaultAuthError, VaultConfigError, VaultError, VaultTlsError } from "../errors.js";
import { formatDuration } from "../../config/duration.js";
import type { CheckReport } from "./report.js";

function tlsFix(e: VaultTlsError): string {
  switch (e.code) {
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return "use the host name in Vault's certificate in VAULT_ADDR, or set VAULT_TLS_SERVER_NAME";
    case "ERR_SSL_WRONG_VERSION_NUMBER":
    case "EPROTO":
      return "check the scheme in VAULT_ADDR (http:// vs https://)";
    case "CERT_HAS_EXPIRED":
    case "CERT_NOT_YET_VALID":
      return "renew Vault's certificate or fix the clock";
    default:
      return "set VAULT_CACERT (or BAO_CACERT, or vault.caCert in the config file) to the PEM of the CA that signed Vault's certificate";
  }
}

/**
 * sys/health, without a token. Returns false when nothing further can be checked. `signal`
 * cancels the request (a Vault that accepts and never answers).
 */
export async function checkReachable(
  client: VaultClient,
  conn: VaultConnection,
  r: CheckReport,
  signal?: AbortSignal,
): Promise<boolean> {
  let status: number;
  let body: { version?: string; sealed?: boolean; initialized?: boolean };
  try {
    const raw = await client.requestRaw("GET", "sys/health", undefined, {
      noAuth: true,
      maxAttempts: 1,
      // standby, DR/perf secondaries, not initialised, sealed: all answers, not errors.
      acceptStatus: [429, 472, 473, 501, 503],
      signal,
    });
    status = raw.status;
    body = JSON.parse(raw.body) as typeof body;
  } catch (e) {
    if (e instanceof VaultTlsError) {
      r.fail(`TLS to Vault at ${conn.address}: ${e.code}`, tlsFix(e));
    } else {
      r.fail(
        `Vault at ${conn.address} is not reachable (${(e as Error).message.replace(/\s*\(gave up.*$/, "")})`,
        "check VAULT_ADDR / vault.address and that Vault is running and reachable from here",
      );
    }
    return false;
  }
  r.ok(`Vault at ${conn.address} reachable${body.version ? ` (version ${body.version})` : ""}`);
  if (conn.address.startsWith("https:")) {
    if (conn.skipVerify) {
      r.fail(
        `TLS: Vault's certificate is NOT verified (VAULT_SKIP_VERIFY): anyone on the path can impersonate the mesh's root of trust`,
        "set VAULT_CACERT to the CA that signed Vault's certificate and unset VAULT_SKIP_VERIFY",
      );
    } else {
      r.ok(
        `TLS: Vault's certificate verified${conn.caCert ? ` against ${conn.caCert}` : conn.caPath ? ` against ${conn.caPath}` : " against the system roots"}`,
      );
    }
  }
  if (status === 501 || body.initialized === false) {
    r.fail(
      `Vault at ${conn.address} is not initialised`,
      "bao operator init (or vault operator init), then unseal it",
    );
    return false;
  }
  if (status === 503 || body.sealed === true) {
    r.fail(
      `Vault at ${conn.address} is sealed`,
      "unseal it: bao operator unseal (or vault operator unseal), once per key share until the threshold is reached",
    );
    return false;
  }
  r.ok(`Vault is unsealed${status === 429 ? " (this node is a standby; requests are forwarded)" : ""}`);
  return true;
}

function loginFix(conn: VaultConnection, e: unknown): string {
  const a = conn.auth;
  if (e instanceof VaultConfigError && a.method !== "token")
    return "fix the file or setting named above (vault.auth in the config file or the VAULT_* variables)";
  switch (a.method) {
    case "token":
      return "set VAULT_TOKEN (or vault.auth.tokenFile) to a valid token with the mode's policy";
    case "approle":
      return `write a fresh secret_id (meshvault vault setup ... --new-secret-id, or vault write -f auth/${a.mount ?? "approle"}/role/<role>/secret-id) and check the role_id`;
    case "kubernetes":
      return `check role "${a.role}" at auth/${a.mount ?? "kubernetes"} (bound service account names/namespaces, audience) and auth/${a.mount ?? "kubernetes"}/config kubernetes_host`;
    case "jwt":
      return `check role "${a.role}" at auth/${a.mount ?? "jwt"} (bound_audiences, user_claim, bound_subject) and the keys in auth/${a.mount ?? "jwt"}/config`;
  }
}

/** Log in like the server would; `signal` cancels the login's request. Never prints the token. */
export async function checkLogin(
  client: VaultClient,
  conn: VaultConnection,
  r: CheckReport,
  signal?: AbortSignal,
): Promise<LoginResult | undefined> {
  const auth = authMethodFromConfig(conn.auth);
  try {
    const l = await auth.login(client, signal);
    const ttl =
      l.leaseSeconds === 0
        ? "no expiry"
        : `TTL ${formatDuration(l.leaseSeconds)}${l.renewable ? ", renewable" : ", not renewable"}`;
    if (l.policies.includes("root")) {
      // A root token passes every capability check, so the rest would say nothing about the
      // server's own access: the usual mistake is an admin VAULT_TOKEN left in the shell.
      r.fail(
        `logged in (${auth.description}) with a root token: every capability check would pass, so this says nothing about what the server can do`,
        `check with the server's own credentials: set vault.auth in the config given with -c (approle, kubernetes, jwt, or token with tokenFile), or pass --auth approle --role-id-file F --secret-id-file F; unset VAULT_TOKEN / BAO_TOKEN`,
      );
      return undefined;
    }
    r.ok(`logged in (${auth.description}): token ${ttl}, policies [${l.policies.join(", ")}]`);
    return l;
  } catch (e) {
    const msg = e instanceof VaultError || e instanceof VaultAuthError ? e.message : String(e);
    r.fail(`login failed (${auth.description}): ${msg}`, loginFix(conn, e));
    return undefined;
  }
}
