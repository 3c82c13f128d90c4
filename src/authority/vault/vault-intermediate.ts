// The `vault-intermediate` authority (seeds 002 and 003): an intermediate CA signed by
// Vault's root mount, then leaves signed here, in memory, at local speed.
//
// mode csr      (seed 002): the key is generated in this process and never leaves it;
//                           its CSR goes to `<rootMount>/root/sign-intermediate`.
// mode exported (seed 003): Vault generates the key at
//                           `<intermediateMount>/intermediate/generate/exported`, the root
//                           signs the CSR, and `<intermediateMount>/intermediate/set-signed`
//                           gives Vault's intermediate mount the certificate too.
// Either way the key is held in memory only (never written to disk). The authority is
// mintIntermediate (mint-intermediate.ts) + a RenewalLoop + sign: the intermediate is renewed
// when `renewAt` of its lifetime has passed, then swapped in with one assignment (a sign() in
// progress finishes with the material it started with). While Vault is down the current
// intermediate keeps signing; renewal retries with backoff until it expires; close() cancels
// a renewal in flight.
import { describeCertificate } from "../../pki/certificate.js";
import type { KeyAlgorithm } from "../../pki/keys.js";
import type { SpiffeId } from "../../pki/spiffe.js";
import { abortable } from "../../timing/clock.js";
import { RenewalLoop } from "../../timing/renewal-loop.js";
import type { ConnectedVault, VaultClient } from "../../vault/index.js";
import {
  AuthorityUnavailableError,
  type Authority,
  type IssuedChain,
  type Readiness,
  type SignRequest,
} from "../authority.js";
import { materialReadiness, signLeaf, type CaMaterial, type LeafSigner } from "../ca-material.js";
import { ReloadListeners } from "../reload-listeners.js";
import { checkPkiMount, silentLog, toAuthorityError, type VaultAuthorityLog } from "./common.js";
import { mintIntermediate, mintMounts } from "./mint-intermediate.js";

export interface VaultIntermediateAuthorityOptions {
  /** Signs leaves somewhere else (the server's issuance workers); default signLeaf here. */
  leafSigner?: LeafSigner;
  vault: ConnectedVault;
  trustDomain: string;
  mode: "csr" | "exported";
  /** Mount holding the root, e.g. "pki". */
  rootMount: string;
  /** Mount that generates the key and receives the certificate (mode exported). */
  intermediateMount: string;
  /** Requested lifetime; Vault shortens it to the root's own notAfter. */
  ttlSeconds: number;
  /** Fraction of the lifetime after which to renew, in (0, 1). */
  renewAt: number;
  /** Default "meshvault intermediate CA (<trust domain>)". */
  commonName?: string | undefined;
  keyAlgorithm: KeyAlgorithm;
  log?: VaultAuthorityLog;
  /** Backoff bounds between failed renewals. Default 1 s .. 5 min. */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Close `vault` on close(). Default true. */
  ownsVault?: boolean;
  /** Sign with this issuer of the root mount instead of its default (a root rotation's new root). */
  rootIssuer?: string | undefined;
}

/** One intermediate in use: the material plus when it was obtained. */
interface Current {
  material: CaMaterial;
  issuedAt: number;
  notAfter: number;
}

/** After every renewal attempt (same shape as the files authority's reload events). */
export type RenewalEvent =
  { ok: true; at: Date; serial: string; notAfter: Date } | { ok: false; at: Date; error: string };

export interface IntermediateInfo {
  serial: string;
  notAfter: Date;
  renewAt: Date;
  renewals: number;
}

export class VaultIntermediateAuthority implements Authority {
  readonly kind = "vault-intermediate";
  private readonly listeners = new ReloadListeners<RenewalEvent>(
    "vault-intermediate: renewal listener",
    () => this.log,
  );
  private readonly loop: RenewalLoop<Current>;
  private readonly client: VaultClient;
  private readonly log: VaultAuthorityLog;
  private readonly commonName: string;

  constructor(private readonly opts: VaultIntermediateAuthorityOptions) {
    this.client = opts.vault.client;
    this.log = opts.log ?? silentLog;
    this.commonName = opts.commonName ?? `meshvault intermediate CA (${opts.trustDomain})`;
    this.loop = new RenewalLoop<Current>({
      what: "vault-intermediate: the intermediate",
      renew: (signal) => this.obtain(signal),
      validity: (c) => ({ from: c.issuedAt, until: c.notAfter }),
      renewAt: opts.renewAt,
      backoff: { initialMs: opts.retryMinMs ?? 1000, maxMs: opts.retryMaxMs ?? 300_000 },
      onRenewed: (next, previous) => this.renewed(next, previous),
      onFailure: (err, f) => {
        if (!f.repeated)
          this.log.error(
            {
              serial: f.current?.material.signer.cert.serialHex,
              notAfter: f.current ? new Date(f.current.notAfter).toISOString() : undefined,
              attempt: f.attempt,
              retryInMs: f.retryInMs,
              err: err.message,
            },
            `vault-intermediate: renewing the intermediate failed, still signing with serial ${f.current?.material.signer.cert.serialHex ?? "(none)"} ` +
              `(expires ${f.current ? new Date(f.current.notAfter).toISOString() : "-"}); retrying in ${Math.round(f.retryInMs / 1000)}s: ${err.message}`,
          );
        this.listeners.emit({ ok: false, at: new Date(), error: err.message });
      },
    });
  }

  private get current(): Current | undefined {
    return this.loop.current;
  }

  async start(signal?: AbortSignal): Promise<void> {
    const cancel = signal ? AbortSignal.any([signal, this.loop.signal]) : this.loop.signal;
    try {
      // The login is shared (it cannot take this signal); stop waiting for it on abort.
      await abortable(this.opts.vault.tokens.start(), cancel);
    } catch (err) {
      if (cancel.aborted) throw err;
      throw toAuthorityError(err, `vault-intermediate: cannot log in to Vault at ${this.client.address}`);
    }
    // A mistyped mount would otherwise read as a missing policy (Vault answers 403 for both).
    for (const [mount, field] of mintMounts(this.opts, (setting) => `authority.${setting}`)) {
      try {
        await checkPkiMount(this.client, mount, field, cancel);
      } catch (err) {
        if (cancel.aborted) throw err;
        throw toAuthorityError(err, `vault-intermediate: checking the mount ${mount}`);
      }
    }
    const c = await this.obtain(cancel);
    this.loop.start(c);
    this.log.info(
      {
        mode: this.opts.mode,
        serial: c.material.signer.cert.serialHex,
        notAfter: new Date(c.notAfter).toISOString(),
        renewAt: new Date(this.renewTime(c)).toISOString(),
      },
      `vault-intermediate (${this.opts.mode}): intermediate ${describeCertificate(c.material.signer.cert)} from ${this.opts.rootMount}, ` +
        `valid until ${new Date(c.notAfter).toISOString()}, renewal at ${new Date(this.renewTime(c)).toISOString()}`,
    );
  }

  private renewTime(c: Current): number {
    return c.issuedAt + this.opts.renewAt * (c.notAfter - c.issuedAt);
  }

  /** mintIntermediate with this authority's settings; throws authority errors. */
  private async obtain(signal: AbortSignal): Promise<Current> {
    const m = await mintIntermediate(
      this.client,
      {
        trustDomain: this.opts.trustDomain,
        mode: this.opts.mode,
        rootMount: this.opts.rootMount,
        intermediateMount: this.opts.intermediateMount,
        ttlSeconds: this.opts.ttlSeconds,
        keyAlgorithm: this.opts.keyAlgorithm,
        commonName: this.commonName,
        setSigned: true,
        label: `vault-intermediate (${this.opts.mode})`,
        rootIssuer: this.opts.rootIssuer,
      },
      signal,
    );
    const lifetime = m.notAfter - m.issuedAt;
    if (lifetime < this.opts.ttlSeconds * 1000 * 0.9)
      this.log.warn(
        { askedSeconds: this.opts.ttlSeconds, validSeconds: Math.round(lifetime / 1000) },
        `vault-intermediate: asked for ${this.opts.ttlSeconds}s but the intermediate is valid for ${Math.round(lifetime / 1000)}s ` +
          `(Vault caps it at the root's expiry or the mount's max_lease_ttl); renewals come sooner`,
      );
    return { material: m.material, issuedAt: m.issuedAt, notAfter: m.notAfter };
  }

  private renewed(next: Current, previous: Current | undefined): void {
    if (!previous) return; // the first one, logged by start()
    this.listeners.emit({
      ok: true,
      at: new Date(),
      serial: next.material.signer.cert.serialHex,
      notAfter: new Date(next.notAfter),
    });
    this.log.info(
      {
        serial: next.material.signer.cert.serialHex,
        previousSerial: previous.material.signer.cert.serialHex,
        certificate: describeCertificate(next.material.signer.cert),
        notAfter: new Date(next.notAfter).toISOString(),
      },
      "vault-intermediate: renewed the intermediate",
    );
  }

  /** Obtain a new intermediate now and swap it in; on failure keep the current one and retry later. */
  renew(): Promise<void> {
    return this.loop.renewNow().then(
      () => undefined,
      () => undefined,
    );
  }

  /** Called after every renewal attempt; returns an unsubscribe function. */
  onReload(listener: (e: RenewalEvent) => void): () => void {
    return this.listeners.add(listener);
  }

  async sign(request: SignRequest, identity: SpiffeId): Promise<IssuedChain> {
    const c = this.current;
    if (!c) throw new AuthorityUnavailableError("vault-intermediate: no intermediate yet (starting)");
    if (c.notAfter <= Date.now())
      throw new AuthorityUnavailableError(
        `vault-intermediate: the intermediate (serial ${c.material.signer.cert.serialHex}) expired at ${new Date(c.notAfter).toISOString()} ` +
          `and Vault could not renew it yet (see the renewal errors in the log)`,
      );
    return (this.opts.leafSigner ?? signLeaf)(c.material, request, identity);
  }

  trustBundle(): string[] {
    return this.current?.material.rootsPem ?? [];
  }

  ready(): Readiness {
    return materialReadiness(
      this.current?.material,
      "no intermediate from Vault yet",
      `Vault could not renew it in time (see the renewal errors in the log): make ${this.opts.rootMount}/root/sign-intermediate work again`,
    );
  }

  /** The intermediate in use (serial, expiry, next renewal). */
  info(): IntermediateInfo | undefined {
    const c = this.current;
    if (!c) return undefined;
    return {
      serial: c.material.signer.cert.serialHex,
      notAfter: new Date(c.notAfter),
      renewAt: new Date(this.renewTime(c)),
      renewals: this.loop.status().renewals,
    };
  }

  async close(): Promise<void> {
    await this.loop.stop();
    if (this.opts.ownsVault ?? true) await this.opts.vault.close();
  }
}
