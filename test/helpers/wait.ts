// Polling for a condition in tests.

/** Polls `fn` every 100 ms until it returns something truthy (returned); throws after `ms`. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  ms = 15_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * `promise`, or a rejection naming `what` after `ms`: for waiting on an event (e.g.
 * `once(emitter, "renew")`). The timer also keeps the process alive meanwhile, which an
 * unref()ed timer inside the code under test does not.
 */
export async function within<T>(what: string, promise: Promise<T>, ms = 15_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
