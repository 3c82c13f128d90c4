// Consecutive failures of one retrying operation: the backoff delay before the next try and
// whether a failure repeats the previous one's message (so a loop logs it once and its
// repeats at debug). Shared by the renewal loop and the agent's outputs.
import { Backoff, type BackoffPolicy } from "./backoff.js";

export interface StreakFailure {
  /** Consecutive failures, this one included. */
  attempt: number;
  /** Backoff delay before the next try. */
  delayMs: number;
  /** Same message as the previous failure of this streak. */
  repeated: boolean;
}

export class FailureStreak {
  private readonly backoff: Backoff;
  private last: string | undefined;

  constructor(policy: BackoffPolicy, random?: () => number) {
    this.backoff = new Backoff(policy, random);
  }

  get policy(): BackoffPolicy {
    return this.backoff.policy;
  }

  /** Failures since the last success. */
  get attempts(): number {
    return this.backoff.attempts;
  }

  /** The message of the latest failure of the current streak. */
  get lastError(): string | undefined {
    return this.last;
  }

  /** Records a failure. */
  fail(message: string): StreakFailure {
    const repeated = message === this.last;
    this.last = message;
    return { delayMs: this.backoff.next(), attempt: this.backoff.attempts, repeated };
  }

  /** Ends the streak; returns how many failures it had (0: nothing to report). */
  succeed(): number {
    const n = this.backoff.attempts;
    this.backoff.reset();
    this.last = undefined;
    return n;
  }
}
