// How every long-running command ends: on SIGINT/SIGTERM it closes what it started, and
// gives up after a deadline so a hung peer (a Vault that accepts and never answers, an
// apiserver gone quiet) cannot keep a terminating pod alive until the kubelet kills it.
// Like ghostunnel's signals.go; a second signal exits at once.
import type { Log } from "../log/logger.js";

/** How long close() may take after a signal before the process exits anyway. */
export const SHUTDOWN_DEADLINE_MS = 15_000;

export interface ShutdownOptions {
  log: Pick<Log, "info" | "error">;
  /** Closes everything the command started (servers, loops, clients); told which signal asked. */
  close: (signal: NodeJS.Signals) => Promise<void>;
  deadlineMs?: number;
  /** Called with the exit code (default process.exit); tests pass their own. */
  exit?: (code: number) => void;
}

/** Installs the SIGINT/SIGTERM handlers; returns a function that removes them. */
export function closeOnSignal(o: ShutdownOptions): () => void {
  const exit = o.exit ?? ((code: number) => process.exit(code));
  const deadline = o.deadlineMs ?? SHUTDOWN_DEADLINE_MS;
  let closing = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (closing) {
      o.log.error({ signal }, "second signal: exiting without waiting for shutdown");
      exit(1);
      return;
    }
    closing = true;
    o.log.info({ signal, deadlineMs: deadline }, "shutting down");
    const timer = setTimeout(() => {
      o.log.error(
        { deadlineMs: deadline },
        "shutdown did not finish before the deadline (a peer is not answering); exiting anyway",
      );
      exit(1);
    }, deadline);
    o.close(signal).then(
      () => {
        clearTimeout(timer);
        exit(0);
      },
      (err: unknown) => {
        clearTimeout(timer);
        o.log.error({ err: (err as Error).message }, "shutdown failed");
        exit(1);
      },
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}
