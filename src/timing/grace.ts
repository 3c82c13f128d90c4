// A bounded graceful close, for servers: work in flight gets `graceMs` to finish, then what is
// left is ended, so a peer that never finishes its request cannot hold a shutdown (and the
// closers after it) until the process's own deadline (ghostunnel's shutdown timeout, grpc-go's
// GracefulStop then Stop).
import { systemClock, type Clock } from "./clock.js";

export interface GraceOptions {
  /** Starts a close that lets work in flight finish; calls `done` once it has. */
  graceful(done: () => void): void;
  /** Ends whatever is still open (connections, streams). */
  force(): void;
  graceMs: number;
  clock?: Clock;
}

/**
 * Resolves once `graceful` calls back, or once `force` has run after `graceMs` without that;
 * `forced` says which.
 */
export function closeWithGrace(o: GraceOptions): Promise<{ forced: boolean }> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (forced: boolean): void => {
      if (settled) return;
      settled = true;
      cancel();
      resolve({ forced });
    };
    // Kept alive: the force must run even when only a hung peer's socket is left.
    const cancel = (o.clock ?? systemClock).setTimer(
      () => {
        if (settled) return;
        o.force();
        settle(true);
      },
      o.graceMs,
      true,
    );
    o.graceful(() => settle(false));
  });
}
