// Vault auth methods, each with a configurable mount path. Every credential
// that lives in a file is re-read at every login, so rotated service-account
// tokens and secret_ids are picked up without a restart. A credential Vault refused
// is not sent again until it changes or a slow retry time passes (refused-logins.ts).

import { readFile } from "node:fs/promises";
import type { VaultClient, VaultAuthBlock, VaultResponse } from "./client.js";
import {
  DEFAULT_AUTH_MOUNTS,
  DEFAULT_SA_TOKEN_FILE,
  type AppRoleAuthConfig,
  type JwtAuthConfig,
  type KubernetesAuthConfig,
  type TokenAuthConfig,
  type VaultAuthConfig,
  type VaultAuthMethodName,
} from "./config.js";
import { VaultAuthError, VaultConfigError, VaultError, VaultNotFoundError } from "./errors.js";
import { fsReason } from "../fs/errors.js";
import {
  APPROLE_REFUSED_RETRY_MS,
  RefusedLogins,
  type CredentialSource,
  type RefusedLoginOptions,
} from "./refused-logins.js";

export interface LoginResult {
  /** The Vault token. Never log it. */
  token: string;
  /** Lease in seconds; 0 = never expires (e.g. a root token). */
  leaseSeconds: number;
  renewable: boolean;
  accessor?: string | undefined;
  policies: string[];
}

export interface AuthMethod {
  readonly method: VaultAuthMethodName;
  /** e.g. "approle login at auth/approle": for messages. */
  readonly description: string;
  /** Whether login() can produce a new token (false for a fixed VAULT_TOKEN). */
  readonly canRelogin: boolean;
  /**
   * Logs in. `signal` cancels the request to Vault itself (as vault-client-go's context):
   * the login rejects with the signal's reason and is not counted as a refusal.
   */
  login(client: VaultClient, signal?: AbortSignal): Promise<LoginResult>;
  /** Secret values used by the last login, to scrub from messages. */
  secrets(): string[];
}

function mountPath(mount: string | undefined, fallback: string): string {
  return (mount ?? fallback)
    .replace(/^\/+/, "")
    .replace(/\/+$/, "")
    .replace(/^auth\//, "");
}

async function readCredential(file: string, what: string, fix: string, address: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    const code = fsReason(e);
    throw new VaultConfigError(`cannot read the ${what} file ${file} (${code}): ${fix}`, {
      address,
      cause: e,
    });
  }
  const v = text.trim();
  if (!v) throw new VaultConfigError(`the ${what} file ${file} is empty: ${fix}`, { address });
  return v;
}

function toLoginResult(r: VaultResponse | null, where: string, address: string): LoginResult {
  const a: VaultAuthBlock | null | undefined = r?.auth;
  if (!a?.client_token) {
    throw new VaultAuthError(`${where} returned no auth.client_token: is this an auth method's login path?`, {
      address,
      path: where,
    });
  }
  return {
    token: a.client_token,
    leaseSeconds: a.lease_duration,
    renewable: a.renewable,
    accessor: a.accessor,
    policies: a.token_policies ?? a.policies ?? [],
  };
}

/**
 * POST auth/<mount>/login and turn failures into messages that say what to
 * check. Unavailable errors (connection, sealed, 5xx) pass through unchanged so
 * callers retry; 400/403/404 become VaultAuthError.
 */
async function login(
  client: VaultClient,
  method: VaultAuthMethodName,
  mount: string,
  body: Record<string, unknown>,
  secrets: string[],
  /** What to check, given Vault's own words. */
  hint: string | ((said: string) => string | Promise<string>),
  signal: AbortSignal | undefined,
): Promise<LoginResult> {
  const path = `auth/${mount}/login`;
  try {
    const r = await client.write(path, body, { noAuth: true, secrets, signal });
    return toLoginResult(r, path, client.address);
  } catch (e) {
    if (!(e instanceof VaultError) || e.retryable || e instanceof VaultConfigError) throw e;
    if (e instanceof VaultNotFoundError) {
      throw new VaultAuthError(
        `${method} login failed: no auth method is mounted at auth/${mount} on Vault at ${client.address}. ` +
          `Enable it (bao auth enable -path=${mount} ${method}) or set the auth mount (VAULT_AUTH_PATH / vault.auth.mount).`,
        {
          address: client.address,
          path,
          method: "POST",
          status: e.status,
          vaultErrors: e.vaultErrors,
          cause: e,
        },
      );
    }
    const said = e.vaultErrors.length ? e.vaultErrors.join("; ") : `HTTP ${e.status ?? "?"}`;
    const check = typeof hint === "string" ? hint : await hint(said);
    if (e.status === 403 && e.vaultErrors.join() === "permission denied") {
      // Vault answers a bare 403 for a login path that does not exist.
      throw new VaultAuthError(
        `${method} login at ${path} on Vault at ${client.address} was denied (permission denied): is an auth method mounted at ` +
          `auth/${mount}? Enable it (bao auth enable -path=${mount} ${method}) or fix the auth mount (VAULT_AUTH_PATH / vault.auth.mount). ${check}`,
        {
          address: client.address,
          path,
          method: "POST",
          status: e.status,
          vaultErrors: e.vaultErrors,
          cause: e,
        },
      );
    }
    throw new VaultAuthError(
      `${method} login at ${path} on Vault at ${client.address} failed: ${said}. ${check}`,
      {
        address: client.address,
        path,
        method: "POST",
        status: e.status,
        vaultErrors: e.vaultErrors,
        cause: e,
      },
    );
  }
}

/**
 * Log in with a given JWT on a jwt or kubernetes role (per-workload logins in
 * the `workload` identity mode). The JWT is never put in a message.
 */
export function loginWithJwt(
  client: VaultClient,
  mount: string,
  role: string,
  jwt: string,
  signal?: AbortSignal,
): Promise<LoginResult> {
  const m = mountPath(mount, DEFAULT_AUTH_MOUNTS.jwt);
  return login(
    client,
    "jwt",
    m,
    { role, jwt },
    [jwt],
    `Check that role "${role}" at auth/${m} accepts this token (bound_audiences, bound_claims / bound service accounts, ` +
      `user_claim) and that Vault can validate its signature.`,
    signal,
  );
}

export class TokenAuth implements AuthMethod {
  readonly method = "token" as const;
  readonly description: string;
  readonly canRelogin: boolean;
  private last: string | undefined;
  private readonly refused: RefusedLogins;
  constructor(
    private readonly cfg: Omit<TokenAuthConfig, "method">,
    options: RefusedLoginOptions = {},
  ) {
    this.canRelogin = cfg.tokenFile !== undefined;
    this.description = cfg.tokenFile ? `token from ${cfg.tokenFile}` : "token (VAULT_TOKEN)";
    this.refused = new RefusedLogins(options);
  }
  async login(client: VaultClient, signal?: AbortSignal): Promise<LoginResult> {
    const token = this.cfg.tokenFile
      ? await readCredential(
          this.cfg.tokenFile,
          "Vault token",
          "point the token file at a valid Vault token",
          client.address,
        )
      : this.cfg.token;
    if (!token) {
      throw new VaultConfigError(
        `no Vault token: set VAULT_TOKEN (or BAO_TOKEN), vault.token in the config file, or configure an auth method`,
        { address: client.address },
      );
    }
    this.last = token;
    const source: CredentialSource = this.cfg.tokenFile
      ? { files: [this.cfg.tokenFile] }
      : { files: [], fixed: "VAULT_TOKEN" };
    return this.refused.run([token], source, () => this.lookupSelf(client, token, signal));
  }

  /** lookup-self tells us the TTL and whether renew-self will work. */
  private async lookupSelf(client: VaultClient, token: string, signal?: AbortSignal): Promise<LoginResult> {
    let r: VaultResponse<{
      ttl?: number;
      renewable?: boolean;
      accessor?: string;
      policies?: string[];
    }> | null;
    try {
      r = await client.request("GET", "auth/token/lookup-self", undefined, { token, signal });
    } catch (e) {
      if (e instanceof VaultError && !e.retryable && !(e instanceof VaultConfigError)) {
        throw new VaultAuthError(
          `the Vault token (${this.description}) was rejected by Vault at ${client.address}: it is expired, revoked or wrong. ` +
            `Provide a valid token.`,
          { address: client.address, path: "auth/token/lookup-self", status: e.status, cause: e },
        );
      }
      throw e;
    }
    const d = r?.data ?? {};
    return {
      token,
      leaseSeconds: d.ttl ?? 0,
      renewable: d.renewable ?? false,
      accessor: d.accessor,
      policies: d.policies ?? [],
    };
  }
  secrets(): string[] {
    return this.last ? [this.last] : [];
  }
}

export class KubernetesAuth implements AuthMethod {
  readonly method = "kubernetes" as const;
  readonly description: string;
  readonly canRelogin = true;
  private readonly mount: string;
  private readonly tokenFile: string;
  private last: string | undefined;
  private readonly refused: RefusedLogins;
  constructor(
    private readonly cfg: Omit<KubernetesAuthConfig, "method">,
    options: RefusedLoginOptions = {},
  ) {
    this.mount = mountPath(cfg.mount, DEFAULT_AUTH_MOUNTS.kubernetes);
    this.tokenFile = cfg.tokenFile ?? DEFAULT_SA_TOKEN_FILE;
    this.description = `kubernetes login at auth/${this.mount} as role "${cfg.role}"`;
    this.refused = new RefusedLogins(options);
  }
  async login(client: VaultClient, signal?: AbortSignal): Promise<LoginResult> {
    // Read at every login: projected tokens rotate underneath us.
    const jwt = await readCredential(
      this.tokenFile,
      "service-account token",
      "mount the service-account token or set VAULT_AUTH_TOKEN_FILE",
      client.address,
    );
    this.last = jwt;
    return this.refused.run([jwt], { files: [this.tokenFile] }, () =>
      login(
        client,
        "kubernetes",
        this.mount,
        { role: this.cfg.role, jwt },
        [jwt],
        `Check that role "${this.cfg.role}" binds this service account (bound_service_account_names / ` +
          `bound_service_account_namespaces) and that Vault can reach the TokenReview API (auth/${this.mount}/config kubernetes_host).`,
        signal,
      ),
    );
  }
  secrets(): string[] {
    return this.last ? [this.last] : [];
  }
}

export class AppRoleAuth implements AuthMethod {
  readonly method = "approle" as const;
  readonly description: string;
  readonly canRelogin = true;
  private readonly mount: string;
  private last: string[] = [];
  private readonly refused: RefusedLogins;
  constructor(
    private readonly cfg: Omit<AppRoleAuthConfig, "method">,
    options: RefusedLoginOptions = {},
  ) {
    this.mount = mountPath(cfg.mount, DEFAULT_AUTH_MOUNTS.approle);
    this.description = `approle login at auth/${this.mount}`;
    this.refused = new RefusedLogins({
      retryMs: APPROLE_REFUSED_RETRY_MS,
      why: "so the refused logins never add up to Vault's user lockout of the role",
      ...options,
    });
  }
  async login(client: VaultClient, signal?: AbortSignal): Promise<LoginResult> {
    const c = this.cfg;
    const roleId =
      c.roleId ??
      (c.roleIdFile
        ? await readCredential(c.roleIdFile, "approle role_id", "write the role_id into it", client.address)
        : undefined);
    const secretId =
      c.secretId ??
      (c.secretIdFile
        ? await readCredential(
            c.secretIdFile,
            "approle secret_id",
            `write a secret_id into it (bao write -f auth/${this.mount}/role/<role>/secret-id)`,
            client.address,
          )
        : undefined);
    if (!roleId) {
      throw new VaultConfigError(
        `approle auth needs a role_id: set VAULT_ROLE_ID / VAULT_ROLE_ID_FILE or vault.auth.roleId / roleIdFile`,
        { address: client.address },
      );
    }
    this.last = [roleId, ...(secretId ? [secretId] : [])];
    const files = [c.roleIdFile, c.secretIdFile].filter((f): f is string => f !== undefined);
    const fixed = [
      ...(c.roleId !== undefined ? ["the role_id (VAULT_ROLE_ID / vault.auth.roleId)"] : []),
      ...(c.secretId !== undefined ? ["the secret_id (VAULT_SECRET_ID / vault.auth.secretId)"] : []),
    ];
    const source: CredentialSource = { files, ...(fixed.length ? { fixed: fixed.join(" and ") } : {}) };
    return this.refused.run(this.last, source, () => this.loginOnce(client, roleId, secretId, signal));
  }

  /** One login at Vault: a refusal costs exactly one failed login (the lockout counter's unit). */
  private loginOnce(
    client: VaultClient,
    roleId: string,
    secretId: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<LoginResult> {
    const c = this.cfg;
    const secretFrom =
      c.secretId !== undefined ? "the configured secret_id" : `the secret_id in ${c.secretIdFile}`;
    const roleFrom =
      c.roleId !== undefined
        ? "the configured role_id (VAULT_ROLE_ID / vault.auth.roleId)"
        : `the role_id in ${c.roleIdFile}`;
    const newSecret = `create a new one with bao write -f auth/${this.mount}/role/<role>/secret-id`;
    const roleFix = `read the right one with bao read auth/${this.mount}/role/<role>/role-id`;
    const body: Record<string, unknown> = { role_id: roleId };
    if (secretId) body["secret_id"] = secretId;
    const hint = async (said: string): Promise<string> => {
      if (!secretId)
        return `No secret_id was given: set VAULT_SECRET_ID_FILE, unless the role has bind_secret_id=false; check ${roleFrom} too (${roleFix}).`;
      // OpenBao and Vault lock an approle role_id after repeated failed logins (user lockout,
      // 5 by default, for 15 minutes) and then answer a bare "permission denied", even for
      // the right secret_id.
      if (/^permission denied$/i.test(said.trim()))
        return (
          `If approle is mounted there, this role_id is locked out after repeated failed logins ` +
          `(user lockout; 5 failures lock it for 15 minutes by default). Fix ${secretFrom} if it is wrong, then wait ` +
          `or unlock it: bao read sys/locked-users, then bao write -f sys/locked-users/<auth mount accessor>/unlock/<role_id>.`
        );
      // Vault says which of the two it did not accept ("invalid role ID" / "invalid secret id");
      // OpenBao says "invalid role or secret ID" for both, so then the role_id alone is tried,
      // which Vault does not count as a failed login (it is not a credential check).
      const both = /invalid role or secret/i.test(said);
      const roleIdOk = both ? await this.roleIdAccepted(client, roleId, signal) : undefined;
      const role = roleIdOk === false || (!both && /role.?id/i.test(said));
      const secret = roleIdOk === true || (!both && /secret.?id/i.test(said));
      const secretCheck =
        `${secretFrom}: it may be wrong, expired, used up (secret_id_num_uses), bound to other CIDRs or issued for ` +
        `another role; ${newSecret}`;
      if (role)
        return `The role_id is not accepted: check ${roleFrom}; it must name an existing role (${roleFix}).`;
      if (secret || !both) return `The secret_id is not accepted: check ${secretCheck}.`;
      return `Check ${roleFrom} (${roleFix}) and ${secretCheck}.`;
    };
    return login(client, "approle", this.mount, body, this.last, hint, signal);
  }

  /**
   * Whether Vault knows `roleId`: a login with the role_id alone is answered "missing
   * secret_id" for a known role and "invalid role or secret ID" for an unknown one.
   */
  private async roleIdAccepted(
    client: VaultClient,
    roleId: string,
    signal: AbortSignal | undefined,
  ): Promise<boolean | undefined> {
    try {
      await client.write(
        `auth/${this.mount}/login`,
        { role_id: roleId },
        { noAuth: true, maxAttempts: 1, secrets: [roleId], signal },
      );
      return true; // bind_secret_id=false: a role_id alone logs in
    } catch (e) {
      if (!(e instanceof VaultError)) return undefined;
      const said = e.vaultErrors.join();
      if (/missing secret.?id/i.test(said)) return true;
      if (/invalid role/i.test(said)) return false;
      return undefined;
    }
  }

  secrets(): string[] {
    return this.last;
  }
}

export class JwtAuth implements AuthMethod {
  readonly method = "jwt" as const;
  readonly description: string;
  readonly canRelogin = true;
  private readonly mount: string;
  private last: string | undefined;
  private readonly refused: RefusedLogins;
  constructor(
    private readonly cfg: Omit<JwtAuthConfig, "method">,
    options: RefusedLoginOptions = {},
  ) {
    this.mount = mountPath(cfg.mount, DEFAULT_AUTH_MOUNTS.jwt);
    this.description = `jwt login at auth/${this.mount} as role "${cfg.role}"`;
    this.refused = new RefusedLogins(options);
  }
  async login(client: VaultClient, signal?: AbortSignal): Promise<LoginResult> {
    const jwt = await readCredential(
      this.cfg.tokenFile,
      "JWT",
      "point VAULT_AUTH_TOKEN_FILE / vault.auth.tokenFile at a file holding the JWT",
      client.address,
    );
    this.last = jwt;
    return this.refused.run([jwt], { files: [this.cfg.tokenFile] }, () =>
      loginWithJwt(client, this.mount, this.cfg.role, jwt, signal),
    );
  }
  secrets(): string[] {
    return this.last ? [this.last] : [];
  }
}

export function authMethodFromConfig(cfg: VaultAuthConfig, options: RefusedLoginOptions = {}): AuthMethod {
  switch (cfg.method) {
    case "token":
      return new TokenAuth(cfg, options);
    case "kubernetes":
      return new KubernetesAuth(cfg, options);
    case "approle":
      return new AppRoleAuth(cfg, options);
    case "jwt":
      return new JwtAuth(cfg, options);
  }
}
