// Time as a dependency: loops and retries take a Clock so tests drive them with a fake
// one (test/helpers/fake-clock.ts) instead of waiting.

/** Cancels a timer; calling it twice, or after the timer fired, does nothing. */
export type CancelTimer = () => void;

export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  /**
   * Calls `fn` once after `ms`. The timer does not keep the process alive unless
   * `keepAlive` is set (a pending renewal alone must not hold a server open).
   */
  setTimer(fn: () => void, ms: number, keepAlive?: boolean): CancelTimer;
}

/** setTimeout's limit (~24.8 days); longer waits are chained. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms, keepAlive = false) {
    let timer: NodeJS.Timeout | undefined;
    const arm = (left: number): void => {
      const wait = Math.min(Math.max(0, left), MAX_TIMER_MS);
      timer = setTimeout(() => (wait < left ? arm(left - wait) : fn()), wait);
      if (!keepAlive) timer.unref();
    };
    arm(ms);
    return () => clearTimeout(timer);
  },
};

/** The error a cancelled wait or request rejects with (what fetch and timers/promises use). */
export function abortError(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  if (r instanceof Error) return r;
  return new DOMException(typeof r === "string" ? r : "the operation was aborted", "AbortError");
}

/** True for the rejection of a cancelled wait/request, so callers can tell it from a failure. */
export function isAbortError(err: unknown): boolean {
  return err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError");
}

/** Waits `ms`; rejects at once with the signal's reason when it is (or becomes) aborted. */
export function sleep(ms: number, signal?: AbortSignal, clock: Clock = systemClock): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortError(signal));
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      cancel();
      reject(abortError(signal!));
    };
    const cancel = clock.setTimer(
      () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      },
      ms,
      true,
    );
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * `promise`, or a rejection with the signal's reason as soon as it aborts: for work that
 * cannot take the signal itself (a shared login). The work goes on; its result is dropped.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    // Given up before it settles: its own rejection (e.g. a closed token manager) is nobody's.
    promise.catch(() => undefined);
    return Promise.reject(abortError(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
