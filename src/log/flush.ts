// The JSON log is written asynchronously (pino's sonic-boom on fd 2). The CLI's last word (the
// error that ends the process) goes to stderr directly, so the log written before it is flushed
// first: the error stays the last line a user or a log collector sees.
interface SyncFlushable {
  flushSync(): void;
}

const pending = new Set<SyncFlushable>();

/** Registers an asynchronous log destination (createLogger does). */
export function flushBeforeExit<T extends SyncFlushable>(destination: T): T {
  pending.add(destination);
  return destination;
}

/** Writes out what every registered destination still buffers; never throws. */
export function flushLogsSync(): void {
  for (const d of pending) {
    try {
      d.flushSync();
    } catch {
      // Not open yet, or already closed: nothing of ours is buffered there.
    }
  }
}
