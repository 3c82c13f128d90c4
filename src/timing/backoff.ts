// The one retry backoff: exponential from `initialMs` up to `maxMs`, with a jitter
// fraction so a fleet of retrying processes spreads out. Shaped after SPIRE's
// pkg/common/backoff (one behaviour for every retry, state in a small object).

export interface BackoffPolicy {
  /** Nominal delay before the first retry. */
  initialMs: number;
  /** Nominal delays stop growing here. */
  maxMs: number;
  /** Growth per attempt (default 2). */
  multiplier?: number;
  /**
   * Fraction of the nominal delay that is random, in [0, 1] (default 0.5). 1 is "full
   * jitter" (uniform in [0, nominal]); 0.5 "equal jitter" (never sooner than half the
   * nominal delay); 0 none.
   */
  jitter?: number;
}

/**
 * Delay before retry number `attempt` (1 = first retry): nominal
 * `min(maxMs, initialMs * multiplier^(attempt-1))`, of which `jitter` is random.
 * `random` is in [0, 1).
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: number = Math.random()): number {
  const m = policy.multiplier ?? 2;
  // The exponent is capped so huge attempt counts cannot overflow to Infinity*0 = NaN.
  const nominal = Math.min(policy.maxMs, policy.initialMs * m ** Math.min(Math.max(0, attempt - 1), 64));
  const j = Math.min(1, Math.max(0, policy.jitter ?? 0.5));
  return Math.round(nominal * (1 - j + j * random));
}

/** Counts attempts for one retrying operation; `reset()` after a success. */
export class Backoff {
  private n = 0;

  constructor(
    readonly policy: BackoffPolicy,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next retry (and counts it). */
  next(): number {
    this.n++;
    return backoffDelay(this.n, this.policy, this.random());
  }

  reset(): void {
    this.n = 0;
  }

  /** Retries since the last reset. */
  get attempts(): number {
    return this.n;
  }
}
