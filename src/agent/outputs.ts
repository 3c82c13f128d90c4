// Where an identity's certificate goes besides SDS: files and a post-rotation hook. Each
// output keeps the latest credentials it was given (a new certificate, or a new trust bundle
// for the one it has) and retries a failed write with backoff (within seconds, not at the
// next rotation) until it holds them; its state feeds the agent's /readyz and /_status.
// Writes are one at a time and the newest wins: an older write still in flight never lands
// after a newer one (a root rotation's bundle change racing a renewal once left an agent's
// files holding its previous, soon expired, certificate).
import type { BackoffPolicy } from "../timing/backoff.js";
import { FailureStreak } from "../timing/failure-streak.js";
import { systemClock, type CancelTimer, type Clock } from "../timing/clock.js";
import type { WorkloadSecrets } from "./sds/source.js";
import type { IssuedInfo } from "./workload.js";
import type { Log } from "../log/logger.js";

export interface OutputStatus {
  /** `files` or `hook`. */
  kind: string;
  /** The directory or the command. */
  target: string;
  /** `current`: holds the identity's current certificate; `failed`: retrying; `pending`: nothing yet. */
  state: "pending" | "current" | "failed";
  /** Serial of the certificate it holds (current) or is trying to write (failed). */
  serial?: string;
  failures: number;
  lastError?: string;
  nextAttemptAt?: string;
}

/** Retries stay short: a local write or hook that starts working again is noticed within seconds. */
export const OUTPUT_BACKOFF: BackoffPolicy = { initialMs: 500, maxMs: 5000 };

export class RetryingOutput {
  private wanted: { secrets: WorkloadSecrets; info: IssuedInfo } | undefined;
  /** What the last successful write wrote (compared by identity: one object per publication). */
  private held: WorkloadSecrets | undefined;
  private running: Promise<void> | undefined;
  private cancelRetry: CancelTimer | undefined;
  private nextAttemptAt: number | undefined;
  private stopped = false;
  private readonly streak: FailureStreak;

  constructor(
    readonly kind: string,
    readonly target: string,
    private readonly write: (secrets: WorkloadSecrets, info: IssuedInfo) => Promise<void>,
    private readonly o: { identity: string; logger: Log; backoff?: BackoffPolicy; clock?: Clock },
  ) {
    this.streak = new FailureStreak(o.backoff ?? OUTPUT_BACKOFF);
  }

  /** Hands the output new credentials; resolves after the first attempt (retries go on by themselves). */
  publish(secrets: WorkloadSecrets, info: IssuedInfo): Promise<void> {
    this.wanted = { secrets, info };
    this.cancelRetry?.();
    this.nextAttemptAt = undefined;
    return this.attempt();
  }

  status(): OutputStatus {
    const wanted = this.wanted;
    const s: OutputStatus = {
      kind: this.kind,
      target: this.target,
      state: !wanted ? "pending" : wanted.secrets === this.held ? "current" : "failed",
      failures: this.streak.attempts,
    };
    if (wanted) s.serial = wanted.info.serial;
    const lastError = this.streak.lastError;
    if (s.state === "failed" && lastError) s.lastError = lastError;
    if (this.nextAttemptAt !== undefined) s.nextAttemptAt = new Date(this.nextAttemptAt).toISOString();
    return s;
  }

  stop(): void {
    this.stopped = true;
    this.cancelRetry?.();
  }

  private attempt(): Promise<void> {
    // One write at a time; a publish during a write is picked up right after it.
    const run = async (): Promise<void> => {
      await this.running?.catch(() => undefined);
      const w = this.wanted;
      if (!w || this.stopped || w.secrets === this.held) return;
      try {
        await this.write(w.secrets, w.info);
        this.held = w.secrets;
        if (this.streak.succeed() > 0)
          this.o.logger.info(
            { identity: this.o.identity, output: this.kind, target: this.target, serial: w.info.serial },
            "output holds the current certificate again",
          );
      } catch (err) {
        const message = (err as Error).message;
        const { delayMs: wait, repeated } = this.streak.fail(message);
        const clock = this.o.clock ?? systemClock;
        this.nextAttemptAt = clock.now() + wait;
        const fields = {
          identity: this.o.identity,
          output: this.kind,
          target: this.target,
          err: message,
          retryInMs: wait,
        };
        if (!repeated) this.o.logger.error(fields, "output failed: not ready; retrying");
        else this.o.logger.debug(fields, "output still failing; retrying");
        if (!this.stopped)
          this.cancelRetry = clock.setTimer(() => {
            this.nextAttemptAt = undefined;
            void this.attempt();
          }, wait);
      }
    };
    const p = run();
    this.running = p;
    return p;
  }
}

/**
 * An identity's outputs in order (the files before the hook that announces them), given each
 * publication of the identity: a new certificate, or a new trust bundle for the one it has.
 * A publication still going down the list stops when a newer one arrives (which goes down the
 * whole list itself), so no output is handed an older one after a newer one.
 */
export class OutputChain {
  private latest: WorkloadSecrets | undefined;

  constructor(readonly outputs: RetryingOutput[]) {}

  async publish(secrets: WorkloadSecrets, info: IssuedInfo): Promise<void> {
    this.latest = secrets;
    for (const o of this.outputs) {
      if (this.latest !== secrets) return;
      await o.publish(secrets, info);
    }
  }

  stop(): void {
    for (const o of this.outputs) o.stop();
  }
}
