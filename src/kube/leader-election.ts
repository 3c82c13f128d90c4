// Leader election on a coordination.k8s.io/v1 Lease, the way client-go does it:
// the holder renews `renewTime` every renewPeriod; a candidate takes the lease
// only when the record has not changed for leaseDuration *as observed on its own
// clock* (no trust in the other replica's clock); updates carry resourceVersion,
// so two candidates racing for an expired lease cannot both win. A leader that
// cannot renew for renewDeadline (< leaseDuration) steps down before anyone else
// may take over, and a leader that stops releases the lease so a standby takes
// over at once instead of after leaseDuration.
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import {
  CoordinationV1Api,
  V1MicroTime,
  type KubeConfig,
  type V1Lease,
  type V1LeaseSpec,
} from "@kubernetes/client-node";
import { describeKubeError, forbiddenHint, statusOf } from "./client.js";
import type { Log } from "../log/logger.js";

export interface LeaderElectorOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  name: string;
  /** This candidate's identity (default `<hostname>_<random>`). */
  identity?: string;
  /** How long a lease is honoured without renewal (default 15 s). */
  leaseDurationSeconds?: number;
  /** How often the leader renews and a standby retries (default 5 s). */
  renewPeriodMs?: number;
  /** A leader that could not renew for this long steps down (default 10 s; must be < lease duration). */
  renewDeadlineMs?: number;
  onStartedLeading: () => void | Promise<void>;
  onStoppedLeading: () => void | Promise<void>;
  /** `log.child({ component })` from the server's logger. */
  log?: Log;
}

export class LeaderElector {
  readonly identity: string;
  private readonly api: CoordinationV1Api;
  private readonly leaseMs: number;
  private readonly renewMs: number;
  private readonly deadlineMs: number;
  private leading = false;
  private lastRenew = 0;
  private observedKey = "";
  private observedAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private tick: Promise<void> = Promise.resolve();
  private lastError = "";
  private completed = 0;

  constructor(private readonly opts: LeaderElectorOptions) {
    this.identity = opts.identity ?? `${hostname()}_${randomBytes(4).toString("hex")}`;
    this.api = opts.kubeConfig.makeApiClient(CoordinationV1Api);
    this.leaseMs = (opts.leaseDurationSeconds ?? 15) * 1000;
    this.renewMs = opts.renewPeriodMs ?? 5000;
    this.deadlineMs = opts.renewDeadlineMs ?? Math.min(10_000, this.leaseMs * (2 / 3));
    if (this.deadlineMs >= this.leaseMs)
      throw new RangeError(
        `leader election: renew deadline (${this.deadlineMs} ms) must be shorter than the lease duration (${this.leaseMs} ms)`,
      );
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** Acquire/renew attempts finished so far (one per renew period): something to wait for. */
  get attempts(): number {
    return this.completed;
  }

  /** Starts campaigning; resolves after the first attempt. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.runOnce();
  }

  /** Stops campaigning; a leader steps down and releases the lease. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearTimeout(this.timer);
    await this.tick;
    if (this.leading) {
      await this.release();
      await this.stepDown("stopping");
    }
  }

  private schedule(): void {
    this.completed++;
    if (!this.running) return;
    this.timer = setTimeout(() => void this.runOnce(), this.renewMs);
    this.timer.unref();
  }

  private runOnce(): Promise<void> {
    this.tick = (async () => {
      let held: boolean;
      try {
        held = await this.tryAcquireOrRenew();
        this.lastError = "";
      } catch (err) {
        const msg = this.describe(err);
        if (msg !== this.lastError)
          this.opts.log?.warn({ ...this.fields(), err: msg }, "leader election failed");
        this.lastError = msg;
        held = false;
        // An API error is not a loss: keep leading until the renew deadline passes.
        if (this.leading && Date.now() - this.lastRenew < this.deadlineMs) {
          this.schedule();
          return;
        }
      }
      if (!this.running) return;
      if (held) {
        this.lastRenew = Date.now();
        if (!this.leading) {
          this.leading = true;
          this.opts.log?.info(this.fields(), "became leader");
          try {
            await this.opts.onStartedLeading();
          } catch (err) {
            this.opts.log?.warn(
              { ...this.fields(), err: (err as Error).message },
              "leader start callback failed",
            );
          }
        }
      } else if (this.leading) {
        await this.stepDown("lost the lease");
      }
      this.schedule();
    })();
    return this.tick;
  }

  private async stepDown(why: string): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    this.opts.log?.info({ ...this.fields(), reason: why }, "no longer leader");
    try {
      await this.opts.onStoppedLeading();
    } catch (err) {
      this.opts.log?.warn({ ...this.fields(), err: (err as Error).message }, "leader stop callback failed");
    }
  }

  private fields(): { lease: string; identity: string } {
    return { lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.identity };
  }

  /** The API error and, for a 403, the RBAC the lease needs. */
  private describe(err: unknown): string {
    const hint =
      statusOf(err) === 403
        ? `; ${forbiddenHint("get, create, update", "leases.coordination.k8s.io", this.opts.namespace)}`
        : "";
    return `${describeKubeError(err)}${hint}`;
  }

  /** True when we hold the lease after this call. Conflicts (someone else won a race) are false. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name } = this.opts;
    const now = new V1MicroTime();
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
      try {
        await this.api.createNamespacedLease({
          namespace,
          body: this.leaseBody(this.spec(now, now, 0)),
        });
        return true;
      } catch (e) {
        if (statusOf(e) === 409) return false;
        throw e;
      }
    }
    const spec: V1LeaseSpec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? "";
    const renewTime = spec.renewTime === undefined ? "" : String(spec.renewTime as unknown);
    const key = `${holder}|${renewTime}|${lease.metadata?.resourceVersion ?? ""}`;
    if (key !== this.observedKey) {
      this.observedKey = key;
      this.observedAt = Date.now();
    }
    const durationMs = (spec.leaseDurationSeconds ?? this.leaseMs / 1000) * 1000;
    const mine = holder === this.identity;
    if (holder !== "" && !mine && this.observedAt + durationMs > Date.now()) return false;

    const acquired = mine && spec.acquireTime ? new V1MicroTime(String(spec.acquireTime as unknown)) : now;
    const transitions = (spec.leaseTransitions ?? 0) + (mine ? 0 : 1);
    try {
      await this.api.replaceNamespacedLease({
        name,
        namespace,
        body: this.leaseBody(this.spec(acquired, now, transitions), lease),
      });
      return true;
    } catch (err) {
      if (statusOf(err) === 409) return false;
      throw err;
    }
  }

  /** Our Lease object with `spec`; replacing `current` (its resourceVersion) when given, else new. */
  private leaseBody(spec: V1LeaseSpec, current?: V1Lease): V1Lease {
    const { namespace, name } = this.opts;
    return {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: current
        ? { name, namespace, resourceVersion: current.metadata?.resourceVersion }
        : { name, namespace },
      spec,
    };
  }

  private spec(acquired: V1MicroTime, renewed: V1MicroTime, transitions: number): V1LeaseSpec {
    return {
      holderIdentity: this.identity,
      leaseDurationSeconds: this.leaseMs / 1000,
      acquireTime: acquired,
      renewTime: renewed,
      leaseTransitions: transitions,
    };
  }

  /** Gives the lease up (empty holder, 1 s duration) so a standby need not wait it out. */
  private async release(): Promise<void> {
    const { namespace, name } = this.opts;
    try {
      const lease = await this.api.readNamespacedLease({ name, namespace });
      if (lease.spec?.holderIdentity !== this.identity) return;
      const now = new V1MicroTime();
      await this.api.replaceNamespacedLease({
        name,
        namespace,
        body: this.leaseBody(
          {
            holderIdentity: "",
            leaseDurationSeconds: 1,
            acquireTime: now,
            renewTime: now,
            leaseTransitions: lease.spec.leaseTransitions ?? 0,
          },
          lease,
        ),
      });
    } catch (err) {
      this.opts.log?.warn(
        { ...this.fields(), err: this.describe(err) },
        "cannot release the lease; the next leader takes over when it expires",
      );
    }
  }
}
