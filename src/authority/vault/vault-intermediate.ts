// The `vault-intermediate` authority (seeds 002 and 003): an intermediate CA signed by
// Vault's root mount, then leaves signed here, in memory, at local speed.
//
// mode csr      (seed 002): the key is generated in this process and never leaves it;
//                           its CSR goes to `<rootMount>/root/sign-intermediate`.
// mode exported (seed 003): Vault generates the key at
//                           `<intermediateMount>/intermediate/generate/exported`, the root
//                           signs the CSR, and `<intermediateMount>/intermediate/set-signed`
//                           gives Vault's intermediate mount the certificate too.
// Either way the key is held in memory only (never written to disk), and the intermediate
// is renewed when `renewAt` of its lifetime has passed, then swapped in with one assignment:
// a sign() in progress finishes with the material it started with. While Vault is down the
// current intermediate keeps signing; renewal retries with backoff until it expires.
import { createPrivateKey, type KeyObject } from "node:crypto";
import { describeCertificate, type Certificate } from "../../pki/certificate.js";
import { buildCsr } from "../../pki/csr.js";
import { generateKeyPairAsync, type KeyAlgorithm } from "../../pki/keys.js";
import type { SpiffeId } from "../../pki/spiffe.js";
import type { ConnectedVault, VaultClient } from "../../vault/index.js";
import {
  AuthorityUnavailableError,
  type Authority,
  type IssuedChain,
  type Readiness,
  type SignRequest,
} from "../authority.js";
import { CaMaterialError, loadCaMaterial, signLeaf, type CaMaterial } from "../ca-material.js";
import { ReloadListeners } from "../reload-listeners.js";
import { parseAll, readMountRoots, silentLog, toAuthorityError, type VaultAuthorityLog } from "./common.js";

export interface VaultIntermediateAuthorityOptions {
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

function vaultKeyParams(alg: KeyAlgorithm): { key_type: string; key_bits?: number } {
  switch (alg) {
    case "ec-p256":
      return { key_type: "ec", key_bits: 256 };
    case "ec-p384":
      return { key_type: "ec", key_bits: 384 };
    case "rsa-2048":
      return { key_type: "rsa", key_bits: 2048 };
    case "rsa-3072":
      return { key_type: "rsa", key_bits: 3072 };
    case "rsa-4096":
      return { key_type: "rsa", key_bits: 4096 };
    case "ed25519":
      return { key_type: "ed25519" };
  }
}

export class VaultIntermediateAuthority implements Authority {
  readonly kind = "vault-intermediate";
  private current: Current | undefined;
  private renewals = 0;
  private failures = 0;
  private readonly listeners = new ReloadListeners<RenewalEvent>(
    "vault-intermediate: renewal listener",
    (m) => this.log.warn(m),
  );
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private readonly client: VaultClient;
  private readonly log: VaultAuthorityLog;
  private readonly commonName: string;

  constructor(private readonly opts: VaultIntermediateAuthorityOptions) {
    this.client = opts.vault.client;
    this.log = opts.log ?? silentLog;
    this.commonName = opts.commonName ?? `meshvault intermediate CA (${opts.trustDomain})`;
  }

  async start(): Promise<void> {
    try {
      await this.opts.vault.tokens.start();
    } catch (err) {
      throw toAuthorityError(err, `vault-intermediate: cannot log in to Vault at ${this.client.address}`);
    }
    const c = await this.obtain();
    this.install(c);
    this.log.info(
      `vault-intermediate (${this.opts.mode}): intermediate ${describeCertificate(c.material.signer.cert)} from ${this.opts.rootMount}, ` +
        `valid until ${new Date(c.notAfter).toISOString()}, renewal at ${new Date(this.renewTime(c)).toISOString()}`,
    );
  }

  private renewTime(c: Current): number {
    return c.issuedAt + this.opts.renewAt * (c.notAfter - c.issuedAt);
  }

  /** Key, CSR, signature by the root, validated material. Throws authority errors. */
  private async obtain(): Promise<Current> {
    const { mode, rootMount, intermediateMount } = this.opts;
    const td = `spiffe://${this.opts.trustDomain}`;
    let csrPem: string;
    let key: KeyObject;
    const step = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        throw toAuthorityError(err, `vault-intermediate (${mode}): ${what}`);
      }
    };
    if (mode === "csr") {
      const pair = await generateKeyPairAsync(this.opts.keyAlgorithm);
      key = pair.privateKey;
      csrPem = buildCsr(key, { subject: { commonName: this.commonName }, uris: [td], ca: true });
    } else {
      const path = `${intermediateMount}/intermediate/generate/exported`;
      const r = await step(`generating the key at ${path}`, () =>
        this.client.write<{ csr?: string; private_key?: string }>(path, {
          common_name: this.commonName,
          uri_sans: td,
          ...vaultKeyParams(this.opts.keyAlgorithm),
        }),
      );
      if (!r?.data?.csr || !r.data.private_key)
        throw new AuthorityUnavailableError(
          `vault-intermediate (exported): ${path} answered without csr/private_key: is ${intermediateMount} a PKI mount?`,
        );
      csrPem = r.data.csr;
      try {
        key = createPrivateKey(r.data.private_key);
      } catch {
        throw new AuthorityUnavailableError(
          `vault-intermediate (exported): ${path} returned an unreadable private key`,
        );
      }
    }
    const signPath = `${rootMount}/root/sign-intermediate`;
    const issuedAt = Date.now();
    const signed = await step(`signing the intermediate at ${signPath}`, () =>
      this.client.write<{ certificate?: string; issuing_ca?: string; ca_chain?: string[] | null }>(signPath, {
        csr: csrPem,
        common_name: this.commonName,
        uri_sans: td,
        ttl: `${this.opts.ttlSeconds}s`,
        // The intermediate signs leaves only.
        max_path_length: 0,
        use_csr_values: false,
        format: "pem",
      }),
    );
    const d = signed?.data;
    if (!d?.certificate)
      throw new AuthorityUnavailableError(
        `vault-intermediate: ${signPath} answered without data.certificate`,
      );
    let cert: Certificate;
    let chain: Certificate[];
    try {
      const first = parseAll([d.certificate], signPath)[0];
      if (!first) throw new Error("no certificate in data.certificate");
      cert = first;
      chain = parseAll([d.certificate, d.issuing_ca, ...(d.ca_chain ?? [])], `${signPath} ca_chain`).filter(
        (c) => Buffer.compare(Buffer.from(c.der), Buffer.from(cert.der)) !== 0,
      );
    } catch (err) {
      throw new AuthorityUnavailableError(
        `vault-intermediate: cannot parse what ${signPath} returned: ${(err as Error).message}`,
      );
    }
    const roots = await step(`reading the trust bundle of ${rootMount}`, () =>
      readMountRoots(this.client, rootMount),
    );
    let material: CaMaterial;
    try {
      material = loadCaMaterial({
        certPem: cert.pem,
        keyPem: key,
        chainPem: chain.map((c) => c.pem).join(""),
        rootPem: roots.map((c) => c.pem).join(""),
        source: `intermediate signed at ${signPath} on ${this.client.address}`,
      });
    } catch (err) {
      if (err instanceof CaMaterialError) throw new AuthorityUnavailableError(err.message, { cause: err });
      throw err;
    }
    if (mode === "exported") {
      const path = `${intermediateMount}/intermediate/set-signed`;
      // With the chain up to the root, so the mount's ca_chain leads to the trust bundle.
      await step(`storing the signed intermediate at ${path}`, () =>
        this.client.write(path, {
          certificate: [cert.pem, ...material.chain.slice(1).map((c) => c.pem), ...material.rootsPem].join(
            "",
          ),
        }),
      );
    }
    const lifetime = cert.notAfter.getTime() - issuedAt;
    if (lifetime < this.opts.ttlSeconds * 1000 * 0.9)
      this.log.warn(
        `vault-intermediate: asked for ${this.opts.ttlSeconds}s but the intermediate is valid for ${Math.round(lifetime / 1000)}s ` +
          `(Vault caps it at the root's expiry or the mount's max_lease_ttl); renewals come sooner`,
      );
    return { material, issuedAt, notAfter: cert.notAfter.getTime() };
  }

  private install(c: Current): void {
    // One assignment: an in-flight sign() keeps the material it already read.
    this.current = c;
    this.failures = 0;
    this.schedule(this.renewTime(c) - Date.now());
  }

  private schedule(ms: number): void {
    if (this.abort.signal.aborted) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.renew(), Math.min(Math.max(0, ms), 2 ** 31 - 1));
    this.timer.unref();
  }

  /** Obtain a new intermediate now and swap it in; on failure keep the current one and retry later. */
  renew(): Promise<void> {
    this.renewing ??= this.renewOnce().finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  private async renewOnce(): Promise<void> {
    if (this.abort.signal.aborted) return;
    const previous = this.current;
    try {
      const next = await this.obtain();
      if (this.abort.signal.aborted) return;
      this.renewals++;
      this.install(next);
      this.listeners.emit({
        ok: true,
        at: new Date(),
        serial: next.material.signer.cert.serialHex,
        notAfter: new Date(next.notAfter),
      });
      this.log.info(
        `vault-intermediate: renewed the intermediate: now ${describeCertificate(next.material.signer.cert)}, valid until ` +
          `${new Date(next.notAfter).toISOString()}${previous ? ` (was serial ${previous.material.signer.cert.serialHex})` : ""}`,
      );
    } catch (err) {
      if (this.abort.signal.aborted) return;
      this.failures++;
      const min = this.opts.retryMinMs ?? 1000;
      const max = this.opts.retryMaxMs ?? 300_000;
      const base = Math.min(max, min * 2 ** Math.min(this.failures - 1, 20));
      let wait = base / 2 + (Math.random() * base) / 2;
      const left = previous ? previous.notAfter - Date.now() : 0;
      // Keep trying well before the current one runs out.
      if (left > 0) wait = Math.min(wait, Math.max(min, left / 4));
      this.log.error(
        `vault-intermediate: renewing the intermediate failed, still signing with serial ${previous?.material.signer.cert.serialHex ?? "(none)"} ` +
          `(expires ${previous ? new Date(previous.notAfter).toISOString() : "-"}); retrying in ${Math.round(wait / 1000)}s: ${(err as Error).message}`,
      );
      this.schedule(wait);
      this.listeners.emit({ ok: false, at: new Date(), error: (err as Error).message });
    }
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
    return signLeaf(c.material, request, identity);
  }

  trustBundle(): string[] {
    return this.current?.material.rootsPem ?? [];
  }

  ready(): Readiness {
    const c = this.current;
    if (!c) return { ready: false, reason: "no intermediate from Vault yet" };
    if (c.notAfter <= Date.now())
      return {
        ready: false,
        reason: `intermediate expired at ${new Date(c.notAfter).toISOString()}; Vault renewal failing`,
      };
    return { ready: true };
  }

  /** The intermediate in use (serial, expiry, next renewal). */
  info(): IntermediateInfo | undefined {
    const c = this.current;
    if (!c) return undefined;
    return {
      serial: c.material.signer.cert.serialHex,
      notAfter: new Date(c.notAfter),
      renewAt: new Date(this.renewTime(c)),
      renewals: this.renewals,
    };
  }

  async close(): Promise<void> {
    this.abort.abort();
    if (this.timer) clearTimeout(this.timer);
    await this.renewing?.catch(() => undefined);
    if (this.opts.ownsVault ?? true) this.opts.vault.close();
  }
}
