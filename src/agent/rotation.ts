// When to renew and how long to wait after a failure: pure functions, so the
// timing rules can be tested without clocks or a CA.

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

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { initialMs: 1000, maxMs: 60_000 };

/**
 * Delay before retry number `attempt` (1 = first retry): exponential with "equal jitter",
 * so retries spread out but never come back sooner than half the nominal delay.
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: number = Math.random()): number {
  const nominal = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(nominal / 2 + (random * nominal) / 2);
}

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

/** setTimeout's limit (~24.8 days); longer waits are chained. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
