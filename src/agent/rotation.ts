// When to renew and how long to wait after a failure: pure functions, so the
// timing rules can be tested without clocks or a CA.
import type { BackoffPolicy } from "../timing/backoff.js";

export interface RotationPolicy {
  /**
   * Fraction of the certificate's lifetime left when renewal starts (istio-agent's
   * SECRET_GRACE_PERIOD_RATIO, default 0.5: renew at half life).
   */
  graceRatio: number;
  /** +/- this much is added to graceRatio per certificate so that a fleet does not renew in lockstep (istio: 0.01). */
  graceJitter: number;
}

export const DEFAULT_ROTATION: RotationPolicy = { graceRatio: 0.5, graceJitter: 0.01 };

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/**
 * The instant to start renewing: `notAfter - (ratio + jitter) * lifetime`, computed from the
 * certificate actually returned (the CA may have shortened the lifetime we asked for).
 * `random` is in [0, 1).
 */
export function renewalTime(cert: Validity, policy: RotationPolicy, random: number = Math.random()): Date {
  const lifetime = cert.notAfter.getTime() - cert.notBefore.getTime();
  const jitter = (random * 2 - 1) * policy.graceJitter;
  const ratio = Math.min(1, Math.max(0, policy.graceRatio + jitter));
  return new Date(cert.notAfter.getTime() - ratio * lifetime);
}

export { backoffDelay, type BackoffPolicy } from "../timing/backoff.js";

/** Equal jitter: retries spread out but never come back sooner than half the nominal delay. */
export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 1000, maxMs: 60_000 };

export type CertState = "pending" | "valid" | "renewal-overdue" | "expiring" | "expired";

/**
 * How healthy the certificate we hold is. `renewal-overdue`: past its renewal time (renewals
 * are failing); `expiring`: less than `expiringRatio` of its lifetime left; `expired`: peers
 * will refuse it.
 */
export function certState(
  cert: Validity | undefined,
  renewAt: Date | undefined,
  now: Date,
  expiringRatio: number,
): CertState {
  if (!cert) return "pending";
  const left = cert.notAfter.getTime() - now.getTime();
  if (left <= 0) return "expired";
  const lifetime = cert.notAfter.getTime() - cert.notBefore.getTime();
  if (left < expiringRatio * lifetime) return "expiring";
  if (renewAt && now.getTime() >= renewAt.getTime()) return "renewal-overdue";
  return "valid";
}

export { MAX_TIMER_MS } from "../timing/clock.js";
