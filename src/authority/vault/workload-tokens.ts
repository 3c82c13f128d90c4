// Vault tokens obtained with a calling workload's own service-account token (vault-sign,
// identity: workload), so that Vault's policies decide per workload as in seed 000.
// Cached per (identity, caller token) until the Vault lease ends: the key includes a hash
// of the caller's token because a trusted node agent may ask for another identity with
// its own token, and Vault must judge the token that was actually presented.
import { createHash } from "node:crypto";
import { loginWithJwt, type VaultClient } from "../../vault/index.js";

export interface WorkloadTokenCacheOptions {
  /** auth/<mount>/login. */
  mount: string;
  role: string;
  /** "kubernetes" or "jwt": for messages only, both log in with {role, jwt}. */
  method: string;
  /** Most entries kept; the least recently used go first. Default 10000. */
  maxEntries?: number;
  /** Upper bound on caching one token, also for tokens without a lease. Default 1 h. */
  maxAgeMs?: number;
  now?: () => number;
}

interface Entry {
  token: string;
  expiresAt: number;
}

export class WorkloadTokenCache {
  private readonly entries = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<Entry>>();
  private readonly maxEntries: number;
  private readonly maxAgeMs: number;
  private readonly now: () => number;
  private logins = 0;
  /** Aborted by close(): cancels the logins in flight (their requests to Vault too). */
  private readonly closing = new AbortController();

  constructor(
    private readonly client: VaultClient,
    private readonly opts: WorkloadTokenCacheOptions,
  ) {
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.maxAgeMs = opts.maxAgeMs ?? 3_600_000;
    this.now = opts.now ?? Date.now;
  }

  private key(identity: string, callerToken: string): string {
    return `${identity}\0${createHash("sha256").update(callerToken).digest("base64")}`;
  }

  /** A Vault token for this caller, logging in with `callerToken` when none is cached or it is about to expire. */
  async token(identity: string, callerToken: string): Promise<string> {
    const k = this.key(identity, callerToken);
    const hit = this.entries.get(k);
    if (hit && hit.expiresAt > this.now()) {
      // Re-insert: Map order is the LRU order.
      this.entries.delete(k);
      this.entries.set(k, hit);
      return hit.token;
    }
    if (hit) this.entries.delete(k);
    let p = this.pending.get(k);
    if (!p) {
      p = this.login(callerToken).finally(() => this.pending.delete(k));
      this.pending.set(k, p);
    }
    const e = await p;
    this.entries.set(k, e);
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    return e.token;
  }

  /** Vault rejected the cached token (revoked, expired early): forget it. */
  invalidate(identity: string, callerToken: string): void {
    this.entries.delete(this.key(identity, callerToken));
  }

  stats(): { cached: number; logins: number } {
    return { cached: this.entries.size, logins: this.logins };
  }

  clear(): void {
    this.entries.clear();
  }

  /** Forgets every token and aborts the logins in flight; later logins fail at once. */
  close(): void {
    this.closing.abort(new DOMException("the workload token cache is closed", "AbortError"));
    this.clear();
  }

  private async login(callerToken: string): Promise<Entry> {
    const r = await loginWithJwt(
      this.client,
      this.opts.mount,
      this.opts.role,
      callerToken,
      this.closing.signal,
    );
    this.logins++;
    const lease = r.leaseSeconds > 0 ? r.leaseSeconds * 1000 : Infinity;
    // Stop using a token a little before Vault does (request time, clock skew).
    const margin = Math.min(10_000, lease * 0.1);
    return { token: r.token, expiresAt: this.now() + Math.min(this.maxAgeMs, lease - margin) };
  }
}
