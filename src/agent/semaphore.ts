// Bounds how many CSRs a node agent has in flight, so a cold start of thousands
// of identities queues locally instead of flooding the CA.

export type Limiter = <T>(fn: () => Promise<T>) => Promise<T>;

export function createLimiter(max: number): Limiter {
  if (!Number.isInteger(max) || max < 1)
    throw new Error(`concurrency limit ${max} must be a positive integer`);
  let active = 0;
  const waiting: (() => void)[] = [];
  const release = (): void => {
    active--;
    waiting.shift()?.();
  };
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active >= max) await new Promise<void>((r) => waiting.push(r));
    active++;
    try {
      return await fn();
    } finally {
      release();
    }
  };
}

export const unlimited: Limiter = (fn) => fn();
