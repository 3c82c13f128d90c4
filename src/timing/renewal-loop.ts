// The one "keep this fresh" loop: obtain a value (certificate, intermediate, token, a
// reconcile pass), renew it when a fraction of its lifetime has passed, retry failures
// with backoff clamped so a still-valid value gets several more tries before it runs out,
// log a repeated failure once, and stop() cancelling the attempt in flight. Like
// istio-csr's certificate provider loop and the Vault Go API's LifetimeWatcher.
import { silentLog, type Log } from "../log/logger.js";
import type { BackoffPolicy } from "./backoff.js";
import { FailureStreak } from "./failure-streak.js";
import { abortError, systemClock, type CancelTimer, type Clock } from "./clock.js";

/**
 * A value's lifetime in epoch ms: `until` it is usable; renewal at the loop's fraction of
 * [from, until], or at `renewAt` when the value knows its own renewal time (Infinity: never).
 */
export type Validity = { until: number } & ({ from: number; renewAt?: number } | { renewAt: number });

export interface RenewalFailure<T> {
  /** Consecutive failures, this one included. */
  attempt: number;
  retryInMs: number;
  /** Same message as the previous failure (the loop logged it at debug only). */
  repeated: boolean;
  /** The value still held, if any. */
  current: T | undefined;
}

export interface RenewalLoopOptions<T> {
  /** What is kept fresh, for logs and errors: "the intermediate", "istiod's certificate". */
  what: string;
  /** Obtains a fresh value; `signal` aborts when the loop stops. */
  renew(signal: AbortSignal): Promise<T>;
  validity(value: T): Validity;
  /** Fraction of [from, until] after which to renew, in (0, 1] (default 0.5). */
  renewAt?: number;
  /** Default 1 s .. 5 min, equal jitter. */
  backoff?: BackoffPolicy;
  /** Never renew sooner than this after a success, so a CA handing out nearly expired values cannot make us spin (default 1 s). */
  minIntervalMs?: number;
  /** Run at least this often even when nothing is due (loops that also repair what they wrote). */
  maxIntervalMs?: number;
  /** Keep the process alive while waiting (default false: the servers do that). */
  keepAlive?: boolean;
  clock?: Clock;
  random?: () => number;
  /** Failures are logged here (first occurrence at warn or error, repeats at debug); omit to log in onFailure yourself. */
  log?: Log;
  /** After every success, once the value is current. Errors are logged, not retried. */
  onRenewed?(value: T, previous: T | undefined): void;
  /** After every failure, before the retry is scheduled. */
  onFailure?(err: Error, failure: RenewalFailure<T>): void;
}

export interface RenewalStatus {
  renewals: number;
  failures: number;
  lastError?: string;
  /** Epoch ms of the next attempt, when one is scheduled. */
  nextAttemptAt?: number;
  renewAt?: number;
  expiresAt?: number;
}

export const DEFAULT_RENEWAL_BACKOFF: BackoffPolicy = { initialMs: 1000, maxMs: 300_000 };

/** `from + fraction * (until - from)`: the renewal instant of a lifetime. */
export function renewalInstant(v: Validity, fraction: number): number {
  if (v.renewAt !== undefined) return v.renewAt;
  return "from" in v ? v.from + fraction * (v.until - v.from) : v.until;
}

export class RenewalLoop<T> {
  private value: T | undefined;
  private inflight: Promise<T> | undefined;
  private cancelTimer: CancelTimer | undefined;
  private nextAt: number | undefined;
  private renewals = 0;
  private readonly streak: FailureStreak;
  private readonly clock: Clock;
  private readonly log: Log;
  private readonly fraction: number;
  private readonly abort = new AbortController();
  private waiters: { resolve: (v: T) => void; reject: (e: Error) => void }[] = [];

  constructor(private readonly o: RenewalLoopOptions<T>) {
    this.clock = o.clock ?? systemClock;
    this.streak = new FailureStreak(o.backoff ?? DEFAULT_RENEWAL_BACKOFF, o.random);
    this.log = o.log ?? silentLog;
    this.fraction = o.renewAt ?? 0.5;
    if (!(this.fraction > 0 && this.fraction <= 1))
      throw new RangeError(`${o.what}: renewAt must be in (0, 1], got ${this.fraction}`);
  }

  /** Aborted by stop(): pass it to work done outside renew() that should end with the loop. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  /** The value in use (undefined before the first success). */
  get current(): T | undefined {
    return this.value;
  }

  /**
   * Starts the loop: with `initial` (obtained by the caller, e.g. at startup so its error
   * reaches the user) the first renewal is scheduled from it; without, one is attempted now.
   * Called again with a value the caller obtained on demand, that value becomes current and
   * the schedule (and backoff) starts over from it.
   */
  start(initial?: T): void {
    if (this.stopped) return;
    if (initial === undefined) {
      void this.attempt().catch(() => undefined);
      return;
    }
    this.value = initial;
    this.streak.succeed();
    this.settleWaiters(initial);
    this.schedule(this.delayAfterSuccess(initial));
  }

  /** Resolves with the first value; rejects when the loop stops before it has one. */
  ready(): Promise<T> {
    if (this.value !== undefined) return Promise.resolve(this.value);
    if (this.stopped) return Promise.reject(new Error(`${this.o.what}: stopped before the first success`));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Renews now, sharing an attempt already running; rejects with its error (a retry is still scheduled). */
  renewNow(): Promise<T> {
    return this.attempt();
  }

  status(): RenewalStatus {
    const s: RenewalStatus = { renewals: this.renewals, failures: this.streak.attempts };
    const lastError = this.streak.lastError;
    if (lastError !== undefined) s.lastError = lastError;
    if (this.nextAt !== undefined) s.nextAttemptAt = this.nextAt;
    if (this.value !== undefined) {
      const v = this.o.validity(this.value);
      s.renewAt = renewalInstant(v, this.fraction);
      s.expiresAt = v.until;
    }
    return s;
  }

  /** Cancels the timer and the attempt in flight (its signal aborts) and waits for it to end. */
  async stop(): Promise<void> {
    if (!this.stopped) this.abort.abort(new DOMException(`${this.o.what}: stopped`, "AbortError"));
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    this.nextAt = undefined;
    for (const w of this.waiters.splice(0))
      w.reject(new Error(`${this.o.what}: stopped before the first success`));
    await this.inflight?.catch(() => undefined);
  }

  private attempt(): Promise<T> {
    if (this.stopped) return Promise.reject(abortError(this.abort.signal));
    if (this.inflight) return this.inflight;
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    this.nextAt = undefined;
    const p = this.run().finally(() => (this.inflight = undefined));
    this.inflight = p;
    return p;
  }

  private async run(): Promise<T> {
    const previous = this.value;
    let next: T;
    try {
      next = await this.o.renew(this.abort.signal);
      if (this.stopped) throw abortError(this.abort.signal);
    } catch (e) {
      if (!this.stopped) this.failed(e instanceof Error ? e : new Error(String(e)));
      throw e;
    }
    this.value = next;
    this.renewals++;
    const failures = this.streak.succeed();
    if (failures > 0)
      this.log.info(
        { what: this.o.what, failures },
        `${this.o.what}: renewed again after ${failures} failed attempts`,
      );
    this.notify("renewal", () => this.o.onRenewed?.(next, previous));
    this.settleWaiters(next);
    this.schedule(this.delayAfterSuccess(next));
    return next;
  }

  private failed(err: Error): void {
    const now = this.clock.now();
    const f = this.streak.fail(err.message);
    let delay = f.delayMs;
    const current = this.value;
    const left = current === undefined ? 0 : this.o.validity(current).until - now;
    // While the value is still valid, keep at least a few tries before it runs out.
    if (left > 0) delay = Math.min(delay, Math.max(left / 2, this.streak.policy.initialMs / 2));
    delay = Math.round(delay);
    const repeated = f.repeated;
    const failure: RenewalFailure<T> = { attempt: f.attempt, retryInMs: delay, repeated, current };
    if (this.o.log) {
      const fields = {
        what: this.o.what,
        attempt: failure.attempt,
        retryInMs: delay,
        err: err.message,
        ...(current !== undefined ? { expiresAt: new Date(now + left).toISOString() } : {}),
      };
      if (repeated) this.log.debug(fields, `${this.o.what}: renewal still failing; retrying`);
      else if (left > 0)
        this.log.warn(
          fields,
          `${this.o.what}: renewal failed; keeping the current one, which is still valid; retrying`,
        );
      else this.log.error(fields, `${this.o.what}: renewal failed and there is no valid one; retrying`);
    }
    this.notify("failure", () => this.o.onFailure?.(err, failure));
    this.schedule(delay);
  }

  /** Runs a listener; its error is logged, never retried or thrown into the loop. */
  private notify(which: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error(
        { what: this.o.what, err: (err as Error).message },
        `${this.o.what}: ${which} listener failed`,
      );
    }
  }

  private delayAfterSuccess(v: T): number {
    const now = this.clock.now();
    let delay = Math.max(
      this.o.minIntervalMs ?? 1000,
      renewalInstant(this.o.validity(v), this.fraction) - now,
    );
    if (this.o.maxIntervalMs !== undefined) delay = Math.min(delay, this.o.maxIntervalMs);
    return delay;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    this.nextAt = undefined;
    // A value that never needs renewing (renewAt Infinity) leaves no timer.
    if (!Number.isFinite(ms)) return;
    this.nextAt = this.clock.now() + ms;
    this.cancelTimer = this.clock.setTimer(
      () => {
        this.cancelTimer = undefined;
        void this.attempt().catch(() => undefined);
      },
      ms,
      this.o.keepAlive ?? false,
    );
  }

  private settleWaiters(v: T): void {
    for (const w of this.waiters.splice(0)) w.resolve(v);
  }
}
