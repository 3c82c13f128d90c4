// Keeps a Vault token valid: logs in lazily, renews with auth/token/renew-self
// at ~2/3 of the lease, logs in again when the token is not renewable, reaches
// its max TTL, expires, or Vault says it is invalid. When to act, the backoff
// after a failure and stop() are the shared RenewalLoop's; this file only decides
// what one renewal is (tokenAction). The token is never logged: events and
// messages carry the accessor at most.

import { EventEmitter } from "node:events";
import { isAbortError, systemClock, type Clock } from "../timing/clock.js";
import { RenewalLoop, type RenewalFailure, type Validity } from "../timing/renewal-loop.js";
import type { AuthMethod, LoginResult } from "./auth.js";
import type { TokenSource, VaultClient } from "./client.js";
import type { Log } from "../log/logger.js";
import { VaultError, VaultPermissionDeniedError } from "./errors.js";

export interface TokenManagerOptions {
  /** Fraction of the lease after which to renew / log in again. Default 2/3. */
  renewFraction?: number;
  /** Backoff bounds for failed renewals/logins in the background. */
  retryMinMs?: number;
  retryMaxMs?: number;
  logger?: Log | undefined;
  /**
   * Renew / log in again in the background (default true). With false the
   * token is only replaced when a request finds it expired or rejected, which
   * suits short-lived caches such as per-workload tokens.
   */
  background?: boolean;
  /** Time for the renewal schedule and expiry checks (tests drive a fake one). */
  clock?: Clock;
  /** Jitter source of the retry backoff, in [0, 1) (tests pin it). */
  random?: () => number;
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
  /** Epoch ms of the login or renewal that granted `leaseSeconds`. */
  obtainedAt: number;
  expiresAt: number;
  /** The lease granted at login, requested again as the renewal increment. */
  loginLease: number;
  /** Renewal granted less than asked: max TTL is near, log in next time. */
  capped: boolean;
}

/** What the renewal of a token is: renew-self, a new login, or nothing Vault would allow. */
export type TokenAction = "renew" | "login" | "none";

/**
 * A renewable token is renewed until Vault grants less than asked (its max TTL is near);
 * then, or when it is not renewable, the next renewal is a new login. A fixed token
 * (no login to repeat) is renewed while Vault lets it, else left alone.
 */
export function tokenAction(t: { renewable: boolean; capped: boolean }, canRelogin: boolean): TokenAction {
  if (t.renewable && (!t.capped || !canRelogin)) return "renew";
  return canRelogin ? "login" : "none";
}

/**
 * When to act on a lease of `leaseSeconds`: at `fraction` of it, but at least 1 s before
 * its end (Vault reports whole seconds and may round up, so a short lease is acted on
 * before it really ends), and never sooner than MIN_DELAY_MS (a 1 s lease must not
 * become a login loop).
 */
export function tokenRenewDelayMs(leaseSeconds: number, fraction: number): number {
  const byFraction = leaseSeconds * 1000 * fraction;
  return Math.round(
    Math.max(Math.min(byFraction, MIN_DELAY_MS), Math.min(byFraction, (leaseSeconds - 1) * 1000)),
  );
}

// A token this close to expiry is treated as expired (clock skew, request time).
const EXPIRY_MARGIN_MS = 1000;
const MIN_DELAY_MS = 500;

export class VaultTokenManager extends EventEmitter<TokenManagerEvents> implements TokenSource {
  private current: Current | undefined;
  /** The login in flight, shared by requests, start() and the loop. */
  private pendingLogin: Promise<Current> | undefined;
  /** The token Vault rejected (invalidate()): never handed out again. */
  private rejected: string | undefined;
  /** What the loop's attempt in flight is doing, for the failure event. */
  private action: "renew" | "login" = "login";
  private closed = false;
  private logins = 0;
  private renewals = 0;
  private readonly fraction: number;
  private readonly clock: Clock;
  private readonly logger: Log | undefined;
  private readonly background: boolean;
  private readonly loop: RenewalLoop<Current>;

  constructor(
    private readonly client: VaultClient,
    private readonly auth: AuthMethod,
    options: TokenManagerOptions = {},
  ) {
    super();
    this.fraction = options.renewFraction ?? 2 / 3;
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger;
    this.background = options.background ?? true;
    this.loop = new RenewalLoop<Current>({
      what: "the Vault token",
      renew: (signal) => this.refresh(signal),
      validity: (c) => this.validity(c),
      backoff: { initialMs: options.retryMinMs ?? 1000, maxMs: options.retryMaxMs ?? 30_000 },
      minIntervalMs: MIN_DELAY_MS,
      clock: this.clock,
      ...(options.random ? { random: options.random } : {}),
      onRenewed: (c) => (this.current = c),
      onFailure: (err, f) => this.failed(err, f),
    });
  }

  /** Log in now (fail fast at startup) and start the renewal timer. */
  async start(): Promise<TokenInfo> {
    if (this.closed) throw new Error("VaultTokenManager is closed");
    await this.loginNow();
    return this.info();
  }

  /** A valid token, logging in first when there is none or it has expired. */
  async token(): Promise<string> {
    if (this.closed) throw new Error("VaultTokenManager is closed");
    const c = this.current;
    if (c && this.usable(c)) return c.token;
    return (await this.loginNow()).token;
  }

  invalidate(token: string): boolean {
    if (!this.auth.canRelogin) return false;
    if (this.current?.token === token && this.rejected !== token) {
      this.logger?.warn(
        { accessor: this.current.accessor ?? "?", auth: this.auth.description },
        "Vault rejected the token; logging in again",
      );
      this.rejected = token;
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

  /** When the next renewal or login is due (epoch ms), if one is scheduled. */
  nextAttemptAt(): number | undefined {
    return this.loop.status().nextAttemptAt;
  }

  /**
   * Stops the timers and cancels the renewal or login in flight (its request to Vault is
   * aborted); resolves once that has ended. The token is left to expire (not revoked).
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([this.loop.stop(), this.pendingLogin]);
  }

  private usable(c: Current): boolean {
    return c.token !== this.rejected && c.expiresAt - this.clock.now() > EXPIRY_MARGIN_MS;
  }

  /**
   * A login for a caller (start(), a request finding no usable token): its failure goes back
   * to the caller and schedules no background retry, since a retry with credentials Vault
   * refuses only hastens an approle lockout; the caller asks again when it needs a token.
   */
  private async loginNow(): Promise<Current> {
    const c = await this.loginShared(this.loop.signal);
    // The renewal schedule follows the new token.
    if (this.background) this.loop.start(c);
    return c;
  }

  private loginShared(signal: AbortSignal): Promise<Current> {
    this.pendingLogin ??= this.login(signal).finally(() => (this.pendingLogin = undefined));
    return this.pendingLogin;
  }

  private validity(c: Current): Validity {
    const never =
      !this.background || c.expiresAt === Infinity || tokenAction(c, this.auth.canRelogin) === "none";
    return {
      until: c.expiresAt,
      renewAt: never ? Infinity : c.obtainedAt + tokenRenewDelayMs(c.leaseSeconds, this.fraction),
    };
  }

  /** One renewal: renew-self while that is what the token allows, else (or when Vault gave up on it) a login. */
  private async refresh(signal: AbortSignal): Promise<Current> {
    const c = this.current;
    // Renewal is due 1 s before the end for short leases: still in time, though too close to hand out.
    const alive = c && c.token !== this.rejected && c.expiresAt > this.clock.now();
    if (c && alive && tokenAction(c, this.auth.canRelogin) === "renew") {
      this.action = "renew";
      try {
        return await this.renewSelf(c, signal);
      } catch (e) {
        if (isAbortError(e) || !this.auth.canRelogin || !this.hopeless(e, c)) throw e;
        // Retrying renew-self cannot help: tell the listeners, then log in in this same attempt.
        this.emit("failure", e as Error, "renew");
        this.logger?.warn({ err: (e as Error).message }, "Vault token renewal failed; logging in again");
        this.rejected = c.token;
      }
    }
    this.action = "login";
    return this.loginShared(signal);
  }

  /** Whether renew-self failed for good: the token is invalid, the request cannot succeed, or the token has run out. */
  private hopeless(e: unknown, c: Current): boolean {
    return (
      (e instanceof VaultPermissionDeniedError && e.tokenInvalid) ||
      (e instanceof VaultError && !e.retryable) ||
      c.expiresAt - this.clock.now() <= EXPIRY_MARGIN_MS
    );
  }

  private async login(signal: AbortSignal): Promise<Current> {
    // The signal cancels the login's request to Vault itself: close() leaves nothing running.
    const r: LoginResult = await this.auth.login(this.client, signal);
    const now = this.clock.now();
    const c: Current = {
      token: r.token,
      accessor: r.accessor,
      policies: r.policies,
      renewable: r.renewable,
      leaseSeconds: r.leaseSeconds,
      obtainedAt: now,
      expiresAt: r.leaseSeconds > 0 ? now + r.leaseSeconds * 1000 : Infinity,
      loginLease: r.leaseSeconds,
      capped: false,
    };
    this.current = c;
    this.logins++;
    this.emit("login", this.info());
    return c;
  }

  private async renewSelf(c: Current, signal: AbortSignal): Promise<Current> {
    const r = await this.client.write(
      "auth/token/renew-self",
      c.loginLease > 0 ? { increment: `${c.loginLease}s` } : {},
      { token: c.token, signal },
    );
    const a = r?.auth;
    if (!a)
      throw new Error(`Vault at ${this.client.address} answered auth/token/renew-self without an auth block`);
    const now = this.clock.now();
    const next: Current = {
      ...c,
      leaseSeconds: a.lease_duration,
      renewable: a.renewable,
      obtainedAt: now,
      expiresAt: a.lease_duration > 0 ? now + a.lease_duration * 1000 : Infinity,
      // Vault grants less than asked when the max TTL is close.
      capped: a.lease_duration < c.loginLease,
    };
    this.current = next;
    this.renewals++;
    this.logger?.debug(
      { accessor: c.accessor ?? "?", leaseSeconds: a.lease_duration },
      "renewed the Vault token",
    );
    this.emit("renew", this.info());
    return next;
  }

  private failed(err: Error, f: RenewalFailure<Current>): void {
    if (this.closed) return;
    this.emit("failure", err, this.action);
    const fields = {
      err: err.message,
      retryInMs: f.retryInMs,
      ...(this.action === "login" ? { auth: this.auth.description } : {}),
    };
    const msg =
      this.action === "renew" ? "Vault token renewal failed; retrying" : "Vault login failed; retrying";
    // The same error at every backoff step would drown the log.
    if (f.repeated) this.logger?.debug(fields, msg);
    else this.logger?.warn(fields, msg);
  }
}
