// Keeps a Vault token valid: logs in lazily, renews with auth/token/renew-self
// at ~2/3 of the lease, logs in again when the token is not renewable, reaches
// its max TTL, expires, or Vault says it is invalid. The token is never logged:
// events and messages carry the accessor at most.

import { EventEmitter } from "node:events";
import { backoffDelay } from "../timing/backoff.js";
import type { AuthMethod, LoginResult } from "./auth.js";
import type { TokenSource, VaultClient, VaultLogger } from "./client.js";
import { VaultError, VaultPermissionDeniedError } from "./errors.js";

export interface TokenManagerOptions {
  /** Fraction of the lease after which to renew / log in again. Default 2/3. */
  renewFraction?: number;
  /** Backoff bounds for failed renewals/logins in the background. */
  retryMinMs?: number;
  retryMaxMs?: number;
  logger?: VaultLogger | undefined;
  /**
   * Renew / log in again in the background (default true). With false the
   * token is only replaced when a request finds it expired or rejected, which
   * suits short-lived caches such as per-workload tokens.
   */
  background?: boolean;
  /** Clock, for tests. */
  now?: () => number;
}

export interface TokenInfo {
  accessor: string | undefined;
  policies: string[];
  renewable: boolean;
  /** Lease of the current token in seconds (0 = never expires). */
  leaseSeconds: number;
  /** Epoch ms, Infinity when the token does not expire. */
  expiresAt: number;
  logins: number;
  renewals: number;
}

export interface TokenManagerEvents {
  login: [info: TokenInfo];
  renew: [info: TokenInfo];
  /** A background renew/login failed; the manager keeps trying. */
  failure: [error: Error, action: "renew" | "login"];
}

interface Current {
  token: string;
  accessor: string | undefined;
  policies: string[];
  renewable: boolean;
  leaseSeconds: number;
  expiresAt: number;
  /** The lease granted at login, requested again as the renewal increment. */
  loginLease: number;
  /** Renewal granted less than asked: max TTL is near, log in next time. */
  capped: boolean;
}

// A token this close to expiry is treated as expired (clock skew, request time).
const EXPIRY_MARGIN_MS = 1000;
const MIN_DELAY_MS = 500;

export class VaultTokenManager extends EventEmitter<TokenManagerEvents> implements TokenSource {
  private current: Current | undefined;
  private pending: Promise<Current> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;
  private closed = false;
  private logins = 0;
  private renewals = 0;
  private readonly fraction: number;
  private readonly retryMinMs: number;
  private readonly retryMaxMs: number;
  private readonly now: () => number;
  private readonly logger: VaultLogger | undefined;
  private readonly background: boolean;

  constructor(
    private readonly client: VaultClient,
    private readonly auth: AuthMethod,
    options: TokenManagerOptions = {},
  ) {
    super();
    this.fraction = options.renewFraction ?? 2 / 3;
    this.retryMinMs = options.retryMinMs ?? 1000;
    this.retryMaxMs = options.retryMaxMs ?? 30_000;
    this.now = options.now ?? Date.now;
    this.logger = options.logger;
    this.background = options.background ?? true;
  }

  /** Log in now (fail fast at startup) and start the renewal timer. */
  async start(): Promise<TokenInfo> {
    await this.loginOnce();
    return this.info();
  }

  /** A valid token, logging in first when there is none or it has expired. */
  async token(): Promise<string> {
    if (this.closed) throw new Error("VaultTokenManager is closed");
    const c = this.current;
    if (c && c.expiresAt - this.now() > EXPIRY_MARGIN_MS) return c.token;
    return (await this.loginOnce()).token;
  }

  invalidate(token: string): boolean {
    if (!this.auth.canRelogin) return false;
    if (this.current?.token === token) {
      this.logger?.warn(
        `Vault token (accessor ${this.current.accessor ?? "?"}) was rejected; logging in again (${this.auth.description})`,
      );
      this.current = undefined;
      this.clearTimer();
    }
    return true;
  }

  secrets(): string[] {
    return [...(this.current ? [this.current.token] : []), ...this.auth.secrets()];
  }

  info(): TokenInfo {
    const c = this.current;
    return {
      accessor: c?.accessor,
      policies: c?.policies ?? [],
      renewable: c?.renewable ?? false,
      leaseSeconds: c?.leaseSeconds ?? 0,
      expiresAt: c?.expiresAt ?? 0,
      logins: this.logins,
      renewals: this.renewals,
    };
  }

  /** Stop the timers. The token is left to expire (not revoked). */
  close(): void {
    this.closed = true;
    this.clearTimer();
  }

  private loginOnce(): Promise<Current> {
    if (!this.pending) {
      this.pending = this.auth
        .login(this.client)
        .then((r) => {
          const c = this.fromLogin(r);
          this.current = c;
          this.logins++;
          this.failures = 0;
          this.schedule();
          this.emit("login", this.info());
          return c;
        })
        .finally(() => {
          this.pending = undefined;
        });
    }
    return this.pending;
  }

  private fromLogin(r: LoginResult): Current {
    return {
      token: r.token,
      accessor: r.accessor,
      policies: r.policies,
      renewable: r.renewable,
      leaseSeconds: r.leaseSeconds,
      expiresAt: r.leaseSeconds > 0 ? this.now() + r.leaseSeconds * 1000 : Infinity,
      loginLease: r.leaseSeconds,
      capped: false,
    };
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private setTimer(ms: number, fn: () => Promise<void>): void {
    this.clearTimer();
    if (this.closed) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        void fn();
      },
      Math.max(0, ms),
    );
    this.timer.unref();
  }

  private schedule(): void {
    const c = this.current;
    if (!c || c.expiresAt === Infinity || !this.background) return;
    // Vault reports whole seconds and may round up: keep a 1 s margin so a
    // short lease is acted on before it really ends.
    // A floor keeps a 1 s lease from turning into a login loop.
    const byFraction = c.leaseSeconds * 1000 * this.fraction;
    const delay = Math.max(
      Math.min(byFraction, MIN_DELAY_MS),
      Math.min(byFraction, (c.leaseSeconds - 1) * 1000),
    );
    const relogin = !c.renewable || c.capped;
    if (relogin && !this.auth.canRelogin) {
      // A fixed token: renew while Vault lets us, nothing else to do.
      if (c.renewable) this.setTimer(delay, () => this.renew());
      return;
    }
    this.setTimer(delay, relogin ? () => this.backgroundLogin() : () => this.renew());
  }

  private retryDelay(c: Current | undefined): number {
    const d = backoffDelay(this.failures + 1, { initialMs: this.retryMinMs, maxMs: this.retryMaxMs });
    // Never wait past most of the remaining lifetime.
    const left = c ? c.expiresAt - this.now() : Infinity;
    return Math.max(this.retryMinMs / 4, Math.min(d, left / 2));
  }

  private async renew(): Promise<void> {
    const c = this.current;
    if (!c || this.closed) return;
    try {
      const r = await this.client.write(
        "auth/token/renew-self",
        c.loginLease > 0 ? { increment: `${c.loginLease}s` } : {},
        { token: c.token },
      );
      const a = r?.auth;
      if (!a || this.current !== c) return;
      c.leaseSeconds = a.lease_duration;
      c.renewable = a.renewable;
      c.expiresAt = a.lease_duration > 0 ? this.now() + a.lease_duration * 1000 : Infinity;
      // Vault grants less than asked when the max TTL is close.
      c.capped = a.lease_duration < c.loginLease;
      this.renewals++;
      this.failures = 0;
      this.logger?.debug?.(`renewed Vault token (accessor ${c.accessor ?? "?"}) for ${a.lease_duration}s`);
      this.schedule();
      this.emit("renew", this.info());
    } catch (e) {
      if (this.closed || this.current !== c) return;
      const err = e as Error;
      this.emit("failure", err, "renew");
      const invalid =
        (e instanceof VaultPermissionDeniedError && e.tokenInvalid) ||
        (e instanceof VaultError && !e.retryable) ||
        c.expiresAt - this.now() <= EXPIRY_MARGIN_MS;
      if (invalid && this.auth.canRelogin) {
        this.logger?.warn(`Vault token renewal failed (${err.message}); logging in again`);
        this.current = undefined;
        await this.backgroundLogin();
        return;
      }
      this.failures++;
      this.logger?.warn(`Vault token renewal failed (${err.message}); retrying`);
      this.setTimer(this.retryDelay(c), () => this.renew());
    }
  }

  private async backgroundLogin(): Promise<void> {
    if (this.closed) return;
    try {
      await this.loginOnce();
    } catch (e) {
      if (this.closed) return;
      this.failures++;
      this.emit("failure", e as Error, "login");
      this.logger?.warn(`Vault login (${this.auth.description}) failed: ${(e as Error).message}; retrying`);
      this.setTimer(this.retryDelay(this.current), () => this.backgroundLogin());
    }
  }
}
