// A login Vault refused is not presented again unchanged. Vault and OpenBao count every
// refused approle login towards user lockout (5 within lockout_counter_reset, 15 minutes by
// default, lock the role_id for 15 minutes), so retrying a wrong secret_id on a backoff of
// seconds locks the role out for everyone who uses it. Instead the refusal is remembered:
// the next login re-reads the credential (files are read at every login anyway) and goes to
// Vault only when it changed (new contents, or a newer modification time: `touch` retries at
// once) or when the slow retry time has passed. Unreachable, sealed and 5xx are not refusals
// and keep the caller's normal backoff.
import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { VaultAuthError } from "./errors.js";

/**
 * How long a refused approle credential is left alone: longer than Vault's and OpenBao's
 * default lockout_counter_reset (15 min), so a server left running with a wrong secret_id
 * never adds up to a lockout.
 */
export const APPROLE_REFUSED_RETRY_MS = 20 * 60_000;
/** Kubernetes, JWT and token logins are not subject to lockout: a fix in Vault is picked up within a minute. */
export const REFUSED_RETRY_MS = 60_000;

export interface RefusedLoginOptions {
  /** How long the same refused credential is not sent again. */
  retryMs?: number;
  /** Clock (epoch ms), for tests. */
  now?: () => number;
}

export interface RefusedLoginPolicy extends RefusedLoginOptions {
  /** Why refused logins are not repeated sooner, appended to the message. */
  why?: string;
}

/** What the operator changes to fix a refused login, for the message. */
export interface CredentialSource {
  /** Files the credential is read from (watched by content and modification time). */
  files: string[];
  /** How to name a credential that does not come from a file, e.g. "VAULT_SECRET_ID". */
  fixed?: string;
}

/** Whether a login failure is Vault refusing the credential (400/403), not Vault being unable to answer. */
export function isRefusal(err: unknown): err is VaultAuthError {
  return err instanceof VaultAuthError && !err.retryable && (err.status === 400 || err.status === 403);
}

export class RefusedLogins {
  private readonly retryMs: number;
  private readonly now: () => number;
  private readonly why: string | undefined;
  private refused: { key: string; until: number; error: VaultAuthError } | undefined;

  constructor(options: RefusedLoginPolicy = {}) {
    this.retryMs = options.retryMs ?? REFUSED_RETRY_MS;
    this.now = options.now ?? Date.now;
    this.why = options.why;
  }

  /**
   * Runs `login` unless this very credential (`values` and `source.files`' contents and
   * modification times) was refused less than retryMs ago; then the refusal is thrown again
   * without asking Vault. A refusal is remembered with a message saying when it is retried.
   */
  async run<T>(values: string[], source: CredentialSource, login: () => Promise<T>): Promise<T> {
    const key = await credentialKey(values, source.files);
    const r = this.refused;
    if (r && r.key === key && this.now() < r.until) throw r.error;
    try {
      const result = await login();
      this.refused = undefined;
      return result;
    } catch (e) {
      if (!isRefusal(e)) throw e;
      const until = this.now() + this.retryMs;
      const error = new VaultAuthError(`denied: ${e.message} ${retryText(source, until, this.why)}`, {
        address: e.address,
        path: e.path,
        method: e.method,
        status: e.status,
        vaultErrors: e.vaultErrors,
        cause: e,
      });
      this.refused = { key, until, error };
      throw error;
    }
  }
}

function retryText(source: CredentialSource, until: number, why: string | undefined): string {
  const at = new Date(until).toISOString();
  const what = source.files.length ? source.files.join(" / ") : undefined;
  const change = what
    ? `Fix the file (${what}): the login is retried when it changes (or is touched)`
    : `Fix ${source.fixed ?? "the credential"} and restart: the login is retried`;
  return `${change}, else at ${at}${why ? `; not sooner, ${why}` : ""}.`;
}

/** A digest of the credential and its files' identity; the values themselves are not kept. */
async function credentialKey(values: string[], files: string[]): Promise<string> {
  const h = createHash("sha256");
  for (const v of values) h.update(v).update("\0");
  for (const f of files) {
    const s = await stat(f).catch(() => undefined);
    h.update(`${f}\0${s?.mtimeMs ?? "-"}\0${s?.size ?? "-"}\0`);
  }
  return h.digest("hex");
}
