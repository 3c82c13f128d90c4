// The JSON log is written asynchronously (pino's sonic-boom on fd 2). The CLI's last word (the
// error that ends the process) goes to stderr directly, so the log written before it is flushed
// first: the error stays the last line a user or a log collector sees.
interface AsyncDestination {
  flushSync(): void;
  once(event: "drain", listener: () => void): unknown;
  off(event: "drain", listener: () => void): unknown;
  /** sonic-boom's own flag: an asynchronous write is on its way (flushSync cannot take it over). */
  readonly _writing?: boolean;
}

const pending = new Set<AsyncDestination>();

/** Registers an asynchronous log destination (createLogger does). */
export function flushBeforeExit<T extends AsyncDestination>(destination: T): T {
  pending.add(destination);
  return destination;
}

/**
 * Writes out what every registered destination holds: waits (up to `timeoutMs`, for a stderr
 * nobody reads) for a write already on its way, then writes the rest synchronously. Never throws.
 */
export async function flushLogs(timeoutMs = 2000): Promise<void> {
  await Promise.all([...pending].map((d) => (d._writing ? drained(d, timeoutMs) : undefined)));
  for (const d of pending) {
    try {
      d.flushSync();
    } catch {
      // Not open yet, or already closed: nothing of ours is buffered there.
    }
  }
}

function drained(d: AsyncDestination, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      d.off("drain", done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    timer.unref();
    d.once("drain", done);
  });
}
