// What a running server does during a root rotation. It wraps the configured authority
// ("current", under the old root) and, once the rotation state names a new root, a second
// instance of the same authority under it ("next"). By phase:
//
//   prepared    next is started (its intermediate made); nothing else changes
//   trust-both  the bundle on every channel is old + new; current still signs
//   switched    next signs (and the server's own TLS certificate is re-issued); bundle old + new;
//               with --cross-sign the chain ends in the new root certified by the old one
//   retired     next signs; the bundle is the new root alone
//
// Once the rotation was finalised (the new root became the configured one: Vault's default
// issuer, or the promoted local CA directory), a restarted server's current authority is
// already under the new root and the wrapper steps aside. A running server gets there without
// a restart: on retired the signer under the new root becomes its base (and the retired root's
// signer is closed), so a later rotation's old root is this one's new root.
import { X509Certificate } from "node:crypto";
import { parseCertificates } from "../pki/certificate.js";
import type { SpiffeId } from "../pki/spiffe.js";
import type { Log } from "../log/logger.js";
import {
  AuthorityUnavailableError,
  type Authority,
  type IssuedChain,
  type MaterialReloadEvent,
  type Readiness,
  type SignRequest,
} from "../authority/authority.js";
import { ReloadListeners } from "../authority/reload-listeners.js";
import { enteredAt, phaseIndex, type Phase, type RotationState, type RotationStore } from "./state.js";

export interface RotatingAuthorityOptions {
  store: RotationStore;
  /** Builds the authority under the new root named by the state. Throws when the kind cannot. */
  makeNext(s: RotationState): Authority;
  pollMs: number;
  /** certificates.maxTtl: the bound on old-root leaves this process cannot account for. */
  maxTtlSeconds: number;
  log: Log;
  /** Called when signing moves from one root to the other (re-issue the serving certificate). */
  onSignerChange?: () => void;
  /**
   * On retired: the authority that carries on under the new root (local: the configured
   * directory the new CA was moved to). Default: the rotation's own signer under the new root.
   */
  makeSuccessor?(s: RotationState): Authority;
  /** After close(): release what the store holds (its Vault connection). */
  onClose?: () => void | Promise<void>;
  now?: () => number;
}

/** What `/rotation` shows and `meshvault root rotate` checks on every server. */
export interface RotationView {
  stateLocation: string;
  /** The phase this server applies (none: no rotation in the state, or finished and finalised). */
  phase: Phase | "none";
  id?: string;
  signer: "current" | "next";
  /** Root fingerprints of this server's base signer: what signs outside a rotation and in the next one's prepared/trust-both. */
  baseRoots?: string[];
  nextReady: boolean;
  nextError?: string;
  bundle: { fingerprint: string; subject: string; notAfter: string }[];
  /** Fingerprint of the cross-certificate this server sends after its intermediate now (switched, --cross-sign). */
  sendsCross?: string;
  /** Latest expiry of a leaf this process signed under the old root (or the bound it cannot beat). */
  oldLeavesValidUntil?: string;
  oldLeavesBasis?: string;
  stateError?: string;
  processStartedAt: string;
}

function fp(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

export class RotatingAuthority implements Authority {
  readonly kind: string;
  private state: RotationState | undefined;
  private next: Authority | undefined;
  private nextFor: string | undefined;
  private nextStarted = false;
  private nextStarting: Promise<void> | undefined;
  private nextError: string | undefined;
  private stateError: string | undefined;
  private finalised = false;
  private signer: "current" | "next" = "current";
  private oldLeavesUntil = 0;
  private bundleCache: { base: string[]; state: RotationState; out: string[] } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private closed = false;
  private readonly startedAt: number;
  private readonly now: () => number;
  /** Reloads of whichever signers this wrapper holds (base, next, a promoted successor). */
  private readonly reloads: ReloadListeners<MaterialReloadEvent>;
  private readonly unfollow = new Map<Authority, () => void>();

  constructor(
    private base: Authority,
    private readonly o: RotatingAuthorityOptions,
  ) {
    this.kind = base.kind;
    this.now = o.now ?? Date.now;
    this.startedAt = this.now();
    this.reloads = new ReloadListeners("a CA reload listener", () => this.o.log);
    this.follow(base);
  }

  async start(signal?: AbortSignal): Promise<void> {
    await this.base.start(signal);
    await this.poll();
    this.timer = setInterval(() => void this.poll(), this.o.pollMs);
    this.timer.unref();
  }

  /** Reads the state and applies it; errors are kept for /rotation and logged once. */
  poll(): Promise<void> {
    this.polling ??= this.pollOnce().finally(() => (this.polling = undefined));
    return this.polling;
  }

  private async pollOnce(): Promise<void> {
    let s: RotationState | undefined;
    try {
      s = await this.o.store.read();
      if (this.stateError) this.o.log.info({ state: this.o.store.location }, "rotation state readable again");
      this.stateError = undefined;
    } catch (err) {
      const msg = `cannot read the rotation state at ${this.o.store.location}: ${(err as Error).message}`;
      if (msg !== this.stateError) this.o.log.warn({ state: this.o.store.location }, msg);
      this.stateError = msg;
      return; // keep applying what we last read
    }
    await this.apply(s);
  }

  private async apply(s: RotationState | undefined): Promise<void> {
    if (this.closed) return;
    if (s && s.authority !== this.base.kind) {
      this.stateError = `the rotation state names authority ${s.authority}, this server runs ${this.base.kind}: ignored`;
      s = undefined;
    }
    const before = this.state?.phase;
    this.state = s;
    if (s?.phase === "retired" && this.signer === "next" && this.next && this.nextStarted)
      await this.promote(s, this.next);
    // The configured authority already holds the new root: the rotation was finalised.
    this.finalised = !!s && this.base.trustBundle().some((pem) => fp(pem) === s.next.fingerprint);
    if (s && !this.finalised) await this.ensureNext(s);
    if (s && s.phase !== before)
      this.o.log.info({ rotation: s.id, phase: s.phase, finalised: this.finalised }, "root rotation phase");
    const want: "current" | "next" =
      s && !this.finalised && phaseIndex(s.phase) >= phaseIndex("switched") && this.nextStarted
        ? "next"
        : "current";
    if (want !== this.signer) {
      this.signer = want;
      this.o.log.info({ rotation: s?.id, signer: want }, "signing under the other root now");
      try {
        this.o.onSignerChange?.();
      } catch (err) {
        this.o.log.error({ err: (err as Error).message }, "after switching signer");
      }
    }
  }

  /** Retired: the signer under the new root becomes the base; the retired root's signer is closed. */
  private async promote(s: RotationState, next: Authority): Promise<void> {
    let successor = next;
    if (this.o.makeSuccessor)
      try {
        const a = this.o.makeSuccessor(s);
        await a.start();
        if (a.trustBundle().some((pem) => fp(pem) === s.next.fingerprint)) {
          successor = a;
          this.follow(a);
        } else {
          await a.close().catch(() => undefined);
          throw new Error(`its roots do not include the rotation's new root ${s.next.fingerprint}`);
        }
      } catch (err) {
        this.o.log.warn(
          { rotation: s.id, err: (err as Error).message },
          "cannot start the configured authority under the new root; the rotation's signer carries on",
        );
      }
    if (this.closed) {
      if (successor !== next) await successor.close().catch(() => undefined);
      return;
    }
    const retired = this.base;
    this.base = successor;
    this.next = undefined;
    this.nextStarted = false;
    // Same root and (local) the same files: no new serving certificate needed.
    this.signer = "current";
    // Leaves signed from now on are the next rotation's old-root leaves.
    this.oldLeavesUntil = 0;
    this.stopFollowing(retired);
    if (successor !== next) {
      this.stopFollowing(next);
      await next.close().catch(() => undefined);
    }
    await retired
      .close()
      .catch((err: unknown) =>
        this.o.log.warn({ err: (err as Error).message }, "closing the retired root's signer"),
      );
    this.o.log.info(
      { rotation: s.id },
      "rotation retired: the signer under the new root is this server's base signer now; the retired root's signer is closed",
    );
  }

  private async ensureNext(s: RotationState): Promise<void> {
    if (this.nextFor === s.id && (this.nextStarted || this.nextStarting)) return this.nextStarting;
    if (this.nextFor !== s.id && this.next) {
      this.stopFollowing(this.next);
      await this.next.close().catch(() => undefined);
      this.next = undefined;
      this.nextStarted = false;
    }
    this.nextFor = s.id;
    this.nextStarting = (async () => {
      try {
        const next = this.o.makeNext(s);
        this.next = next;
        this.follow(next);
        await next.start();
        const roots = next.trustBundle().map(fp);
        if (!roots.includes(s.next.fingerprint))
          throw new Error(
            `the new authority's roots (${roots.join(", ")}) do not include the rotation's new root ${s.next.fingerprint}`,
          );
        this.nextStarted = true;
        this.nextError = undefined;
        this.o.log.info({ rotation: s.id }, "signer under the new root is ready");
      } catch (err) {
        this.nextError = (err as Error).message;
        this.o.log.error(
          { rotation: s.id, err: this.nextError },
          "cannot start the signer under the new root; retrying",
        );
        if (this.next) this.stopFollowing(this.next);
        await this.next?.close().catch(() => undefined);
        this.next = undefined;
        this.nextFor = undefined;
      } finally {
        this.nextStarting = undefined;
      }
    })();
    return this.nextStarting;
  }

  /**
   * Reloads and renewals of the signing material, from whichever signer this server holds now:
   * the configured one, the one under the new root, and after retired its successor (so
   * `meshvault_ca_reloads_total` keeps counting after a rotation without a restart).
   */
  onReload(listener: (e: MaterialReloadEvent) => void): () => void {
    return this.reloads.add(listener);
  }

  private follow(a: Authority): void {
    const off = a.onReload?.((e) => this.reloads.emit(e));
    if (off) this.unfollow.set(a, off);
  }

  private stopFollowing(a: Authority): void {
    this.unfollow.get(a)?.();
    this.unfollow.delete(a);
  }

  trustBundle(): string[] {
    const s = this.state;
    const base = this.base.trustBundle();
    if (!s || this.finalised || s.phase === "prepared") return base;
    if (s.phase === "retired") return [s.next.pem];
    // Called on every signature and client-certificate check: computed once per change.
    const c = this.bundleCache;
    if (c && c.base === base && c.state === s) return c.out;
    const out = [...base];
    const have = new Set(base.map(fp));
    for (const pem of [s.old.pem, s.next.pem])
      if (!have.has(fp(pem))) {
        out.push(pem);
        have.add(fp(pem));
      }
    this.bundleCache = { base, state: s, out };
    return out;
  }

  async sign(request: SignRequest, identity: SpiffeId): Promise<IssuedChain> {
    const s = this.state;
    let issued: IssuedChain;
    if (this.signer === "next" && this.next) {
      issued = await this.next.sign(request, identity);
      // Cross-signed rotation: peers still holding only the old root reach it through the
      // cross-certificate; peers holding the new root stop at the new root (its subject).
      if (s?.cross && s.phase === "switched")
        issued = { ...issued, intermediatesPem: [...issued.intermediatesPem, s.cross.pem] };
    } else {
      if (s && !this.finalised && s.phase === "retired")
        throw new AuthorityUnavailableError(
          `root rotation ${s.id} is retired but the signer under the new root is not ready: ${this.nextError ?? "starting"}`,
        );
      issued = await this.base.sign(request, identity);
      // The server replaces its own TLS certificate when the signer changes; count workloads' leaves.
      if (!request.dnsNames?.length && !request.ipAddresses?.length)
        this.oldLeavesUntil = Math.max(this.oldLeavesUntil, this.now() + request.ttlSeconds * 1000);
    }
    return s ? { ...issued, rootsPem: this.trustBundle() } : issued;
  }

  ready(): Readiness {
    if (this.signer === "next" && this.next) return this.next.ready();
    const s = this.state;
    if (s && !this.finalised && s.phase === "retired")
      return {
        ready: false,
        reason: `root rotation ${s.id} retired the old root but the new signer is not ready`,
      };
    return this.base.ready();
  }

  view(): RotationView {
    const s = this.state;
    const v: RotationView = {
      stateLocation: this.o.store.location,
      phase: s && !this.finalised ? s.phase : "none",
      signer: this.signer,
      baseRoots: this.base.trustBundle().map(fp),
      nextReady: this.nextStarted,
      bundle: this.trustBundle().flatMap((pem) =>
        parseCertificates(pem).map((c) => ({
          fingerprint: fp(c.pem),
          subject: new X509Certificate(c.pem).subject.replace(/\n/g, ", "),
          notAfter: c.notAfter.toISOString(),
        })),
      ),
      processStartedAt: new Date(this.startedAt).toISOString(),
    };
    if (s) v.id = s.id;
    if (s?.cross && s.phase === "switched" && this.signer === "next" && this.next)
      v.sendsCross = s.cross.fingerprint;
    if (this.nextError) v.nextError = this.nextError;
    if (this.stateError) v.stateError = this.stateError;
    if (s && !this.finalised) {
      const started = new Date(s.startedAt).getTime();
      const switched = enteredAt(s, "switched")?.getTime();
      let until = this.oldLeavesUntil;
      let basis = "the longest leaf this server signed under the old root";
      if (this.startedAt > started) {
        // A previous run of this server may have signed old-root leaves we never saw.
        const bound = Math.min(this.startedAt, switched ?? this.startedAt) + this.o.maxTtlSeconds * 1000;
        if (bound > until) {
          until = bound;
          basis = `this server restarted during the rotation: its start + certificates.maxTtl (${this.o.maxTtlSeconds}s)`;
        }
      }
      if (until > 0) {
        v.oldLeavesValidUntil = new Date(until).toISOString();
        v.oldLeavesBasis = basis;
      }
    }
    return v;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.polling?.catch(() => undefined);
    await this.nextStarting?.catch(() => undefined);
    await this.next?.close().catch(() => undefined);
    await this.base.close();
    await this.o.onClose?.();
  }
}
