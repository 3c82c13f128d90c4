// One workload identity's certificate lifecycle: key in memory, CSR, CA call,
// checks, publication, renewal at `notAfter - ratio x lifetime`, and retries with
// backoff that never give up a certificate which is still valid.
import type { KeyObject } from "node:crypto";
import { buildCsr } from "../pki/csr.js";
import { splitCertificates } from "../pki/pem.js";
import { formatName } from "../pki/name.js";
import { generateKeyPairAsync, privateKeyPem, type KeyAlgorithm } from "../pki/keys.js";
import type { CaClient } from "./ca-client.js";
import { checkIssuedChain, csrSubjectPublicKeyInfo, type CheckedChain } from "./issued.js";
import { RenewalLoop, type RenewalFailure } from "../timing/renewal-loop.js";
import {
  certState,
  DEFAULT_BACKOFF,
  DEFAULT_ROTATION,
  renewalTime,
  type BackoffPolicy,
  type CertState,
  type RotationPolicy,
} from "./rotation.js";
import { unlimited, type Limiter } from "./semaphore.js";
import { createMutableSecretSource, type MutableSecretSource, type WorkloadSecrets } from "./sds/source.js";
import { readToken } from "./token.js";
import { composeTrustBundle, sameRoots, type RootFileState } from "./trust-bundle.js";
import { silentLog, type Log } from "../log/logger.js";

export interface WorkloadIdentityOptions {
  /** Label for logs, metrics and status (e.g. `default/sleep`). */
  name: string;
  ca: CaClient;
  /** Projected service-account token; re-read before every CA call. Undefined: never send one. */
  tokenFile?: string;
  /** The SPIFFE ID to put in the CSR and to expect back; undefined lets the CA decide from the token. */
  spiffeId?: string;
  /** Default rsa-2048, like istio-agent. */
  keyAlgorithm?: KeyAlgorithm;
  /** Lifetime to ask for (seconds). Default 86400. The CA may return less; rotation follows the real one. */
  validitySeconds?: number;
  rotation?: RotationPolicy;
  backoff?: BackoffPolicy;
  /** State `expiring` (logged, exposed) when less than this fraction of the lifetime is left. Default 0.2. */
  expiringRatio?: number;
  /** When the token file is missing, renew over mTLS with the current certificate. Default true. */
  renewWithClientCert?: boolean;
  /** Shared by a node agent's identities to bound CSRs in flight. */
  limiter?: Limiter;
  /** `log.child({ component: "agent" })` from the agent's logger. */
  logger?: Log;
  /** Called after every successful issuance, before the next renewal is scheduled. Errors are logged. */
  onIssued?: (secrets: WorkloadSecrets, issued: IssuedInfo) => Promise<void> | void;
  /** Called after a failed attempt (for metrics). */
  onFailure?: (err: Error) => void;
  /**
   * The agent's reading of its mounted root file (root rotation), composed with each CA answer's
   * roots (trust-bundle.ts). Absent: the CA answer's roots alone.
   */
  rootFile?: RootFileState;
  /** Called after applyRootFile() changed the published trust bundle (the same certificate with the new roots). */
  onRootsChanged?: (secrets: WorkloadSecrets, issued: IssuedInfo) => Promise<void> | void;
}

export interface IssuedInfo {
  spiffeId: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  renewAt: Date;
  /** When the CA's answer arrived; the lifetime used for rotation starts here (or at notBefore if later). */
  receivedAt: Date;
  /** Subjects/issuers of the verified path, leaf first, for display. */
  path: { subject: string; issuer: string; serial: string; notAfter: string }[];
  /** How the CA authenticated us: `token` or `client-cert`. */
  via: "token" | "client-cert";
}

export interface IdentityStatus {
  name: string;
  spiffeId?: string;
  state: CertState;
  notBefore?: string;
  notAfter?: string;
  renewAt?: string;
  secondsToExpiry?: number;
  serial?: string;
  issued: number;
  consecutiveFailures: number;
  lastError?: string;
  nextAttemptAt?: string;
}

const MIN_RENEWAL_INTERVAL_MS = 1000;

export class WorkloadIdentity {
  /** What SDS servers and tunnels read; `set()` is called on every issuance. */
  readonly source: MutableSecretSource = createMutableSecretSource();
  private readonly log: Log;
  private readonly rotation: RotationPolicy;
  private readonly limiter: Limiter;
  /** Published (status, outputs) the moment a certificate arrives, before the loop records it. */
  private info: IssuedInfo | undefined;
  /** The roots of the CA answer that carried the current certificate, and the one its path ends at. */
  private answer: { rootsPem: string; anchorPem: string } | undefined;
  private issuedCount = 0;
  private readonly loop: RenewalLoop<IssuedInfo>;

  constructor(private readonly o: WorkloadIdentityOptions) {
    this.log = o.logger ?? silentLog;
    this.rotation = o.rotation ?? DEFAULT_ROTATION;
    this.limiter = o.limiter ?? unlimited;
    this.loop = new RenewalLoop<IssuedInfo>({
      what: `workload certificate ${o.name}`,
      renew: () => this.limiter(() => this.issue()),
      validity: (i) => ({
        from: Math.max(i.notBefore.getTime(), i.receivedAt.getTime()),
        until: i.notAfter.getTime(),
        renewAt: i.renewAt.getTime(),
      }),
      backoff: o.backoff ?? DEFAULT_BACKOFF,
      // Never spin: even a CA that returns nearly expired certificates gets at most one call a second.
      minIntervalMs: MIN_RENEWAL_INTERVAL_MS,
      onRenewed: (info) => this.afterSuccess(info),
      onFailure: (err, f) => this.afterFailure(err, f),
    });
  }

  get name(): string {
    return this.o.name;
  }

  /** Starts the first issuance; later renewals schedule themselves. */
  start(): void {
    this.loop.start();
  }

  /** Resolves once a certificate is held; rejects if the identity is stopped first. */
  ready(): Promise<void> {
    if (this.info) return Promise.resolve();
    return this.loop.ready().then(
      () => undefined,
      () => Promise.reject(new Error(`identity ${this.o.name} stopped before it got a certificate`)),
    );
  }

  /** Renews now (tests, SIGHUP, `meshvault agent` status endpoint). Shares an attempt already running. */
  rotateNow(): Promise<IssuedInfo> {
    return this.loop.renewNow();
  }

  current(): WorkloadSecrets | undefined {
    return this.source.current();
  }

  /**
   * The root file changed (a root rotation's step): the bundle is composed again for the current
   * certificate and published at once, without waiting for the next renewal.
   */
  applyRootFile(): boolean {
    const cur = this.source.current();
    const info = this.info;
    const answer = this.answer;
    if (!cur || !info || !answer) return false;
    const rootsPem = composeTrustBundle(answer.rootsPem, answer.anchorPem, this.o.rootFile);
    if (sameRoots(splitCertificates(rootsPem), splitCertificates(cur.rootsPem))) return false;
    const next = { ...cur, rootsPem };
    this.source.set(next);
    this.log.info({ identity: this.o.name }, "trust bundle changed: published the new roots");
    void Promise.resolve(this.o.onRootsChanged?.(next, info)).catch((err: Error) =>
      this.log.error({ identity: this.o.name, err: err.message }, "cannot write the new trust bundle"),
    );
    return true;
  }

  issued(): IssuedInfo | undefined {
    return this.info;
  }

  status(now = new Date()): IdentityStatus {
    const i = this.info;
    const s: IdentityStatus = {
      name: this.o.name,
      state: certState(
        i && { notBefore: i.notBefore > i.receivedAt ? i.notBefore : i.receivedAt, notAfter: i.notAfter },
        i?.renewAt,
        now,
        this.o.expiringRatio ?? 0.2,
      ),
      issued: this.issuedCount,
      consecutiveFailures: 0,
    };
    // Just published and the loop has not recorded it yet: no old failure next to the new serial.
    const loop = i === this.loop.current ? this.loop.status() : undefined;
    if (loop) s.consecutiveFailures = loop.failures;
    if (i) {
      s.spiffeId = i.spiffeId;
      s.notBefore = i.notBefore.toISOString();
      s.notAfter = i.notAfter.toISOString();
      s.renewAt = i.renewAt.toISOString();
      s.secondsToExpiry = Math.round((i.notAfter.getTime() - now.getTime()) / 1000);
      s.serial = i.serial;
    } else if (this.o.spiffeId) s.spiffeId = this.o.spiffeId;
    if (loop?.lastError) s.lastError = loop.lastError;
    if (loop?.nextAttemptAt !== undefined) s.nextAttemptAt = new Date(loop.nextAttemptAt).toISOString();
    return s;
  }

  /** Stops renewing; resolves when an attempt in flight has ended. */
  stop(): Promise<void> {
    return this.loop.stop();
  }

  private async issue(): Promise<IssuedInfo> {
    if (this.loop.stopped) throw new Error(`identity ${this.o.name} is stopped`);
    const { privateKey } = await generateKeyPairAsync(this.o.keyAlgorithm ?? "rsa-2048");
    const csrPem = buildCsr(privateKey, {
      subject: { organization: "" },
      ...(this.o.spiffeId ? { uris: [this.o.spiffeId] } : {}),
    });
    const token = this.o.tokenFile ? await readToken(this.o.tokenFile) : undefined;
    // Stopped while the key was being made: no CSR goes out for an identity that is gone.
    if (this.loop.stopped) throw new Error(`identity ${this.o.name} is stopped`);
    const current = this.source.current();
    const stillValid = this.info !== undefined && this.info.notAfter.getTime() > Date.now();
    let via: IssuedInfo["via"] = "token";
    let clientCert: WorkloadSecrets | undefined;
    if (token === undefined) {
      if ((this.o.renewWithClientCert ?? true) && current && stillValid) {
        via = "client-cert";
        clientCert = current;
      } else if (this.o.tokenFile) {
        throw new Error(
          `token file ${this.o.tokenFile} is missing or empty and there is no valid certificate to renew with; mount the projected service-account token (audience istio-ca) or create one with \`meshvault token create\``,
        );
      }
    }
    const chain = await this.o.ca.createCertificate({
      csrPem,
      validitySeconds: this.o.validitySeconds ?? 86400,
      ...(token !== undefined ? { token } : {}),
      ...(clientCert ? { clientCert } : {}),
    });
    // The key the leaf must certify, as the CSR carries it: reading it there takes ~7 us, exporting
    // it again from the key ~115 us (P-256, OpenSSL 3, measured), of ~2 ms of agent CPU per identity.
    return this.publish(chain, privateKey, csrSubjectPublicKeyInfo(csrPem), via);
  }

  private async publish(
    chain: string[],
    privateKey: KeyObject,
    spki: Uint8Array,
    via: IssuedInfo["via"],
  ): Promise<IssuedInfo> {
    const checked: CheckedChain = checkIssuedChain(chain, spki, this.o.spiffeId);
    const leaf = checked.leaf;
    const receivedAt = new Date();
    const lifeStart = new Date(Math.max(leaf.notBefore.getTime(), receivedAt.getTime()));
    const info: IssuedInfo = {
      spiffeId: checked.spiffeId,
      serial: leaf.serialHex,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      // Lifetime counts from when we received the certificate, as istio-agent does: CAs backdate
      // notBefore (2 min here and in Istio), which would make short-lived certificates renew at once.
      renewAt: renewalTime({ notBefore: lifeStart, notAfter: leaf.notAfter }, this.rotation),
      receivedAt,
      path: checked.path.map((c) => ({
        subject: formatName(c.subject),
        issuer: formatName(c.issuer),
        serial: c.serialHex,
        notAfter: c.notAfter.toISOString(),
      })),
      via,
    };
    const answer = { rootsPem: checked.rootsPem, anchorPem: checked.path.at(-1)!.pem };
    const secrets: WorkloadSecrets = {
      certChainPem: checked.certChainPem,
      privateKeyPem: privateKeyPem(privateKey),
      // Not the answer's roots as such: it may have been signed before the root file's last change.
      rootsPem: composeTrustBundle(answer.rootsPem, answer.anchorPem, this.o.rootFile),
    };
    // Status flips to the new certificate in one step: no window where it shows the new serial
    // next to the old failure count.
    this.info = info;
    this.answer = answer;
    this.issuedCount++;
    this.source.set(secrets);
    if (this.o.onIssued) {
      try {
        await this.o.onIssued(secrets, info);
      } catch (err) {
        this.log.error(
          { identity: this.o.name, err: (err as Error).message },
          "certificate issued (and served over SDS) but an output failed; it is given the next certificate",
        );
      }
    }
    return info;
  }

  private afterSuccess(info: IssuedInfo): void {
    this.log.info(
      {
        identity: this.o.name,
        spiffeId: info.spiffeId,
        serial: info.serial,
        notAfter: info.notAfter.toISOString(),
        renewAt: info.renewAt.toISOString(),
        via: info.via,
      },
      "workload certificate issued",
    );
  }

  /** The loop retries (clamped to the certificate's expiry); this says what it means, once per distinct error. */
  private afterFailure(err: Error, f: RenewalFailure<IssuedInfo>): void {
    this.o.onFailure?.(err);
    const state = this.status().state;
    const fields = {
      identity: this.o.name,
      attempt: f.attempt,
      retryInMs: f.retryInMs,
      err: err.message,
      state,
      ...(this.info ? { notAfter: this.info.notAfter.toISOString() } : {}),
    };
    if (f.repeated) {
      this.log.debug(fields, "workload certificate: renewal still failing with the same error; retrying");
    } else if (state === "expiring" || state === "expired") {
      this.log.error(
        fields,
        "cannot renew and the current certificate is about to expire (or has); still serving it",
      );
    } else if (this.info) {
      this.log.warn(
        fields,
        "cannot renew the workload certificate; keeping the current one, which is still valid",
      );
    } else {
      this.log.warn(fields, "cannot get a workload certificate yet; retrying");
    }
  }
}
