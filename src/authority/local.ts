// The embedded `local` authority: a self-signed root and an intermediate kept in the
// data directory (keys 0600), created on first start and reused afterwards.
import { createPrivateKey } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomicSync } from "../fs/atomic-write.js";
import type { Log } from "../log/logger.js";
import { issueCa, parseIssued, createSigner } from "../pki/issue.js";
import { fitCommonName } from "../pki/name.js";
import { generateKeyPairFor, privateKeyPem, type KeyAlgorithm } from "../pki/keys.js";
import { parseCertificate } from "../pki/certificate.js";
import type { SpiffeId } from "../pki/spiffe.js";
import {
  AuthorityUnavailableError,
  type Authority,
  type IssuedChain,
  type Readiness,
  type SignRequest,
} from "./authority.js";
import {
  loadCaMaterial,
  materialReadiness,
  signLeaf,
  type CaMaterial,
  type LeafSigner,
} from "./ca-material.js";
import { fsReason } from "../fs/errors.js";
import { systemClock, type Clock } from "../timing/clock.js";
import { RenewalLoop } from "../timing/renewal-loop.js";

export interface LocalAuthorityOptions {
  /** Signs leaves somewhere else (the server's issuance workers); default signLeaf here. */
  leafSigner?: LeafSigner;
  /** Directory holding `local-ca/`; created 0700 when missing. */
  dataDir: string;
  trustDomain: string;
  keyAlgorithm?: KeyAlgorithm;
  rootTtlSeconds?: number;
  intermediateTtlSeconds?: number;
  organization?: string;
  /** Re-issue the intermediate from the root when less than this fraction of its life is left. */
  renewFraction?: number;
  /** `log.child({ component: "authority" })` from the server's logger. */
  log?: Log;
  /** Drives the renewal schedule (tests inject a fake one). */
  clock?: Clock;
  /** Directory under dataDir (default `local-ca`; a root rotation prepares `local-ca-next-<id>`). */
  dirName?: string;
}

const YEAR = 365 * 86400;
const FILES = {
  rootCert: "root-cert.pem",
  rootKey: "root-key.pem",
  caCert: "ca-cert.pem",
  caKey: "ca-key.pem",
} as const;

export class LocalAuthorityError extends Error {
  override name = "LocalAuthorityError";
}

export class LocalAuthority implements Authority {
  readonly kind = "local";
  private material: CaMaterial | undefined;
  private readonly dir: string;
  private loop: RenewalLoop<CaMaterial> | undefined;

  constructor(private readonly opts: LocalAuthorityOptions) {
    this.dir = join(opts.dataDir, opts.dirName ?? "local-ca");
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const present = Object.values(FILES).filter((f) => existsSync(join(this.dir, f)));
    if (present.length === 0) this.createRoot();
    else if (!existsSync(join(this.dir, FILES.rootCert)) || !existsSync(join(this.dir, FILES.rootKey)))
      throw new LocalAuthorityError(
        `local CA in ${this.dir} is incomplete: found ${present.join(", ")} but not the root and its key; restore the missing files or move the directory away to start a new CA`,
      );
    if (!existsSync(join(this.dir, FILES.caCert)) || !existsSync(join(this.dir, FILES.caKey)))
      this.createIntermediate();
    this.material = this.load();
    this.renewIfDue();
    // A long-running server must not outlive its intermediate: re-issue it when
    // renewFraction of its life is left, retrying a failure with the shared backoff.
    this.loop = new RenewalLoop<CaMaterial>({
      what: "the local intermediate CA",
      renew: async () => this.reissue(),
      validity: (m) => ({ from: m.signer.cert.notBefore.getTime(), until: m.signer.cert.notAfter.getTime() }),
      renewAt: 1 - (this.opts.renewFraction ?? 0.25),
      clock: this.clock,
      ...(this.opts.log ? { log: this.opts.log.child({ dir: this.dir }) } : {}),
      onRenewed: (m) => (this.material = m),
    });
    this.loop.start(this.material);
  }

  private get clock(): Clock {
    return this.opts.clock ?? systemClock;
  }

  private reissue(): CaMaterial {
    this.opts.log?.info(
      { dir: this.dir },
      "local CA intermediate is close to expiry: issuing a new one from the root",
    );
    this.createIntermediate();
    return this.load();
  }

  /** Re-issues the intermediate from the root when little of its life is left; swaps atomically. */
  renewIfDue(): boolean {
    if (!this.material || !this.needsRenewal(this.material)) return false;
    this.material = this.reissue();
    return true;
  }

  private read(name: string): string {
    const path = join(this.dir, name);
    try {
      if (name.endsWith("key.pem") && (statSync(path).mode & 0o077) !== 0)
        this.opts.log?.warn({ path }, "the CA key is readable by group or others: chmod 600 it");
      return readFileSync(path, "utf8");
    } catch (err) {
      throw new LocalAuthorityError(
        `cannot read ${path}: ${fsReason(err)}; check permissions of the data directory`,
      );
    }
  }

  private load(): CaMaterial {
    try {
      return loadCaMaterial({
        certPem: this.read(FILES.caCert),
        keyPem: this.read(FILES.caKey),
        rootPem: this.read(FILES.rootCert),
        source: `local CA in ${this.dir}`,
      });
    } catch (err) {
      if (err instanceof LocalAuthorityError) throw err;
      throw new LocalAuthorityError(
        `${(err as Error).message}; the files in ${this.dir} are inconsistent: restore them from backup or move the directory away to start a new CA`,
      );
    }
  }

  private needsRenewal(m: CaMaterial): boolean {
    const c = m.signer.cert;
    const life = c.notAfter.getTime() - c.notBefore.getTime();
    return c.notAfter.getTime() - this.clock.now() < life * (this.opts.renewFraction ?? 0.25);
  }

  private createRoot(): void {
    const alg = this.opts.keyAlgorithm ?? "ec-p256";
    const key = generateKeyPairFor(alg);
    const root = issueCa({
      subject: {
        organization: this.opts.organization ?? "meshvault",
        commonName: fitCommonName("meshvault root CA", this.opts.trustDomain),
      },
      key: key.privateKey,
      ttlSeconds: this.opts.rootTtlSeconds ?? 10 * YEAR,
      uris: [`spiffe://${this.opts.trustDomain}`],
    });
    writeFileAtomicSync(join(this.dir, FILES.rootKey), privateKeyPem(key.privateKey), 0o600);
    writeFileAtomicSync(join(this.dir, FILES.rootCert), root.pem, 0o644);
    this.opts.log?.info({ dir: this.dir }, "created the local root CA");
  }

  private createIntermediate(): void {
    const root = parseCertificate(this.read(FILES.rootCert), "local root certificate");
    let rootKey;
    try {
      rootKey = createPrivateKey(this.read(FILES.rootKey));
    } catch (err) {
      if (err instanceof LocalAuthorityError) throw err;
      throw new LocalAuthorityError(`${join(this.dir, FILES.rootKey)} is not a readable PEM private key`);
    }
    const rootSigner = createSigner(root, rootKey);
    const key = generateKeyPairFor(this.opts.keyAlgorithm ?? "ec-p256");
    const cert = issueCa(
      {
        subject: {
          organization: this.opts.organization ?? "meshvault",
          commonName: fitCommonName("meshvault intermediate CA", this.opts.trustDomain),
        },
        key: key.publicKey,
        ttlSeconds: this.opts.intermediateTtlSeconds ?? YEAR,
        pathLen: 0,
        uris: [`spiffe://${this.opts.trustDomain}`],
      },
      rootSigner,
    );
    parseIssued(cert);
    writeFileAtomicSync(join(this.dir, FILES.caKey), privateKeyPem(key.privateKey), 0o600);
    writeFileAtomicSync(join(this.dir, FILES.caCert), cert.pem, 0o644);
    this.opts.log?.info(
      { dir: this.dir, notAfter: cert.notAfter.toISOString() },
      "issued the local intermediate CA",
    );
  }

  async sign(request: SignRequest, identity: SpiffeId): Promise<IssuedChain> {
    if (!this.material) throw new AuthorityUnavailableError("local authority has not started");
    return (this.opts.leafSigner ?? signLeaf)(this.material, request, identity);
  }

  trustBundle(): string[] {
    return this.material?.rootsPem ?? [];
  }

  ready(): Readiness {
    // The intermediate is re-issued from the root well before it expires (renewFraction).
    return materialReadiness(
      this.material,
      "local CA not loaded yet",
      `the local CA in ${this.dir} could not re-issue it (see the log); restart the server or move the directory away to start a new CA`,
    );
  }

  /** The signing material, for the server's own serving certificate. */
  current(): CaMaterial | undefined {
    return this.material;
  }

  async close(): Promise<void> {
    await this.loop?.stop();
  }
}
