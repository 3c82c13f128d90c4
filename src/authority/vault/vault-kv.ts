// The `vault-kv` authority (seed 001): the CA certificate, key and optional chain/root
// live in Vault KV (v2 or v1), referenced as `vault:secret/data/pki/istiod#certificate`.
// Loaded and validated (key matches cert, chain reaches the root) before use, then polled:
// KV v2 by metadata version (cheap), KV v1 by content. A new version replaces the old
// material only when it validates completely; a bad one is refused, loudly, and the old
// one keeps signing. While Vault is down the loaded CA keeps signing.
import { createHash } from "node:crypto";
import { describeCertificate } from "../../pki/certificate.js";
import type { SpiffeId } from "../../pki/spiffe.js";
import { abortable } from "../../timing/clock.js";
import {
  kvMetadataVersion,
  parseKvReference,
  readKv,
  VaultPermissionDeniedError,
  type ConnectedVault,
  type KvReference,
  type VaultClient,
} from "../../vault/index.js";
import {
  AuthorityDeniedError,
  AuthorityUnavailableError,
  type Authority,
  type IssuedChain,
  type Readiness,
  type SignRequest,
} from "../authority.js";
import {
  loadCaMaterial,
  materialReadiness,
  signLeaf,
  type CaMaterial,
  type LeafSigner,
} from "../ca-material.js";
import { ReloadListeners } from "../reload-listeners.js";
import { certKey, silentLog, toAuthorityError, type VaultAuthorityLog } from "./common.js";

export interface VaultKvAuthorityOptions {
  /** Signs leaves somewhere else (the server's issuance workers); default signLeaf here. */
  leafSigner?: LeafSigner;
  vault: ConnectedVault;
  /** `vault:<mount>/data/<path>#<field>` (v2) or `vault:<mount>/<path>#<field>` (v1). */
  certificate: string;
  privateKey: string;
  chain?: string | undefined;
  root?: string | undefined;
  /** 0 disables polling. */
  pollIntervalMs: number;
  log?: VaultAuthorityLog;
  /** Close `vault` on close(). Default true. */
  ownsVault?: boolean;
}

/** After every reload attempt that saw a new version (same shape as the files authority's). */
export type KvReloadEvent =
  { ok: true; at: Date; signingCa: string } | { ok: false; at: Date; error: string };

export interface KvReloadFailure {
  at: Date;
  message: string;
}

type Role = "certificate" | "privateKey" | "chain" | "root";

/** One KV secret read by one or more references. */
interface Secret {
  ref: KvReference;
  /** Version (v2) or content hash (v1) of what is loaded. */
  loaded: string | undefined;
}

function secretId(r: KvReference): string {
  return `${r.version}\0${r.mount}\0${r.path}`;
}

function apiPath(r: KvReference): string {
  return r.version === 2 ? `${r.mount}/data/${r.path}` : `${r.mount}/${r.path}`;
}

export class VaultKvAuthority implements Authority {
  readonly kind = "vault-kv";
  private material: CaMaterial | undefined;
  private readonly refs: Map<Role, KvReference>;
  private readonly secrets = new Map<string, Secret>();
  private readonly client: VaultClient;
  private readonly log: VaultAuthorityLog;
  private lastError: KvReloadFailure | undefined;
  /** Versions of the last refused set, so it is reported once, not at every poll. */
  private refusedFingerprint: string | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private vaultDown = false;
  /** metadata/ is not readable with our policy: poll the data path instead. */
  private metadataDenied = false;
  private closed = false;
  private counts = { succeeded: 0, failed: 0 };
  /** Polls that could not read Vault: lets callers wait for one instead of sleeping. */
  private pollFailures = 0;
  private readonly listeners = new ReloadListeners<KvReloadEvent>(
    "vault-kv: reload listener",
    () => this.log,
  );

  constructor(private readonly opts: VaultKvAuthorityOptions) {
    this.client = opts.vault.client;
    this.log = opts.log ?? silentLog;
    this.refs = new Map();
    const add = (role: Role, ref: string | undefined): void => {
      if (ref === undefined) return;
      const parsed = parseKvReference(ref, { requireField: true });
      this.refs.set(role, parsed);
      const id = secretId(parsed);
      if (!this.secrets.has(id)) this.secrets.set(id, { ref: parsed, loaded: undefined });
    };
    add("certificate", opts.certificate);
    add("privateKey", opts.privateKey);
    add("chain", opts.chain);
    add("root", opts.root);
  }

  private describeRefs(): string {
    return [...this.refs.values()].map((r) => r.raw).join(", ");
  }

  async start(signal?: AbortSignal): Promise<void> {
    try {
      // The login is shared (it cannot take this signal); stop waiting for it on abort.
      await abortable(this.opts.vault.tokens.start(), signal);
    } catch (err) {
      throw toAuthorityError(err, `vault-kv: cannot log in to Vault at ${this.client.address}`);
    }
    const read = await this.readAll(undefined, signal);
    this.material = this.validate(read.values);
    this.commit(read.versions);
    const ca = this.material.signer.cert;
    this.log.info(
      { signingCa: describeCertificate(ca), from: this.describeRefs(), notAfter: ca.notAfter.toISOString() },
      "vault-kv: loaded the CA",
    );
    if (this.opts.pollIntervalMs > 0) {
      this.pollTimer = setInterval(() => void this.poll(), this.opts.pollIntervalMs);
      this.pollTimer.unref();
    }
  }

  /**
   * Reads every secret (at `versions` when given, for one consistent set) and picks the
   * fields. Vault errors become authority errors naming the reference.
   */
  private async readAll(
    versions: Map<string, number> | undefined,
    signal?: AbortSignal,
  ): Promise<{ values: Map<Role, string>; versions: Map<string, string> }> {
    const data = new Map<string, Record<string, unknown>>();
    const seen = new Map<string, string>();
    for (const [id, s] of this.secrets) {
      const v = versions?.get(id);
      let secret;
      try {
        secret = await readKv(this.client, s.ref, { ...(v !== undefined ? { version: v } : {}), signal });
      } catch (err) {
        if (signal?.aborted) throw err;
        throw toAuthorityError(err, `vault-kv: reading ${s.ref.raw}`);
      }
      if (!secret)
        throw new AuthorityDeniedError(
          `vault-kv: no secret at ${apiPath(s.ref)} on Vault at ${this.client.address} (${s.ref.raw}). ` +
            `Write it (bao kv put ${s.ref.mount}/${s.ref.path} certificate=@ca-cert.pem privateKey=@ca-key.pem) or fix the reference`,
        );
      data.set(id, secret.data);
      seen.set(
        id,
        secret.version !== undefined
          ? `v${secret.version}`
          : createHash("sha256").update(JSON.stringify(secret.data)).digest("hex"),
      );
    }
    const values = new Map<Role, string>();
    for (const [role, ref] of this.refs) {
      const d = data.get(secretId(ref))!;
      const value = d[ref.field!];
      if (typeof value !== "string" || value.trim() === "") {
        const fields = Object.keys(d).join(", ") || "none";
        throw new AuthorityDeniedError(
          `vault-kv: ${ref.raw}: the secret at ${apiPath(ref)} has no non-empty string field "${ref.field}" (fields: ${fields}); ` +
            `fix the #field in the ${role} reference or the secret`,
        );
      }
      values.set(role, value);
    }
    return { values, versions: seen };
  }

  private validate(values: Map<Role, string>): CaMaterial {
    const chain = values.get("chain");
    const root = values.get("root");
    try {
      return loadCaMaterial({
        certPem: values.get("certificate")!,
        keyPem: values.get("privateKey")!,
        ...(chain !== undefined ? { chainPem: chain } : {}),
        ...(root !== undefined ? { rootPem: root } : {}),
        source: `CA in Vault KV (${this.describeRefs()})`,
      });
    } catch (err) {
      throw new AuthorityDeniedError(
        `${(err as Error).message}. The certificate, key${chain !== undefined ? ", chain" : ""}${root !== undefined ? " and root" : ""} ` +
          `must belong to one CA hierarchy${root === undefined && chain === undefined ? " (or add a #root reference)" : ""}`,
        { cause: err },
      );
    }
  }

  private commit(versions: Map<string, string>): void {
    for (const [id, v] of versions) this.secrets.get(id)!.loaded = v;
    this.refusedFingerprint = undefined;
    this.lastError = undefined;
  }

  /** Checks for a new version now and reloads when there is one. Never rejects. */
  poll(): Promise<void> {
    this.polling ??= this.pollOnce().finally(() => (this.polling = undefined));
    return this.polling;
  }

  /** Current version per secret: metadata for v2 (unless denied), content for v1. */
  private async currentVersions(): Promise<Map<string, string> | undefined> {
    const out = new Map<string, string>();
    for (const [id, s] of this.secrets) {
      if (s.ref.version === 2 && !this.metadataDenied) {
        try {
          const v = await kvMetadataVersion(this.client, s.ref);
          if (v === undefined)
            throw new AuthorityDeniedError(`vault-kv: ${s.ref.raw}: the secret was deleted`);
          out.set(id, `v${v}`);
          continue;
        } catch (err) {
          if (!(err instanceof VaultPermissionDeniedError) || err.tokenInvalid) throw err;
          this.metadataDenied = true;
          this.log.warn(
            { path: `${s.ref.mount}/metadata/${s.ref.path}`, err: err.message },
            'vault-kv: cannot read the secret\'s metadata; polling the secret itself instead (grant "read" on that path for cheaper polling)',
          );
        }
      }
      return undefined; // read everything
    }
    return out;
  }

  private async pollOnce(): Promise<void> {
    if (this.closed) return;
    try {
      const current = await this.currentVersions();
      let read: { values: Map<Role, string>; versions: Map<string, string> };
      if (current) {
        if ([...current].every(([id, v]) => this.secrets.get(id)!.loaded === v)) return this.recovered();
        const pinned = new Map<string, number>();
        for (const [id, v] of current) pinned.set(id, Number(v.slice(1)));
        read = await this.readAll(pinned);
      } else {
        read = await this.readAll(undefined);
        if ([...read.versions].every(([id, v]) => this.secrets.get(id)!.loaded === v))
          return this.recovered();
      }
      this.recovered();
      const fingerprint = [...read.versions.values()].join(",");
      if (fingerprint === this.refusedFingerprint) return; // already reported
      let material: CaMaterial;
      try {
        material = this.validate(read.values);
      } catch (err) {
        this.refusedFingerprint = fingerprint;
        this.counts.failed++;
        this.lastError = { at: new Date(), message: (err as Error).message };
        this.listeners.emit({ ok: false, at: this.lastError.at, error: this.lastError.message });
        this.log.error(
          {
            versions: this.describeVersions(read.versions),
            signingCa: describeCertificate(this.material!.signer.cert),
            reason: (err as Error).message,
          },
          "vault-kv: refused the new CA in Vault KV and kept signing with the loaded one",
        );
        return;
      }
      const previous = this.material;
      this.material = material;
      this.commit(read.versions);
      this.counts.succeeded++;
      this.listeners.emit({ ok: true, at: new Date(), signingCa: describeCertificate(material.signer.cert) });
      this.log.info(
        {
          versions: this.describeVersions(read.versions),
          signingCa: describeCertificate(material.signer.cert),
          notAfter: material.signer.cert.notAfter.toISOString(),
        },
        "vault-kv: reloaded the CA",
      );
      if (previous && previous.roots.map(certKey).sort().join() !== material.roots.map(certKey).sort().join())
        this.log.warn(
          { roots: material.roots.map((r) => describeCertificate(r)) },
          "vault-kv: the root certificate changed; workloads trusting only the old root reject certificates signed from now on until they receive the new trust bundle",
        );
    } catch (err) {
      if (this.closed) return;
      this.pollFailures++;
      const unavailable = err instanceof AuthorityUnavailableError;
      if (unavailable && this.vaultDown) return; // said so already
      this.vaultDown = unavailable;
      this.log.warn(
        { err: toAuthorityError(err, "poll").message },
        "vault-kv: cannot check Vault KV for a new CA version (still signing with the loaded CA)",
      );
    }
  }

  private recovered(): void {
    if (this.vaultDown) this.log.info({ vault: this.client.address }, "vault-kv: Vault answers again");
    this.vaultDown = false;
  }

  private describeVersions(versions: Map<string, string>): string {
    return [...versions]
      .map(([id, v]) => `${apiPath(this.secrets.get(id)!.ref)} ${v.startsWith("v") ? v : "(kv v1)"}`)
      .join(", ");
  }

  /** Called after every reload attempt that saw a new version; returns an unsubscribe function. */
  onReload(listener: (e: KvReloadEvent) => void): () => void {
    return this.listeners.add(listener);
  }

  /** Why the most recent new version was refused; cleared by the next successful load. */
  lastReloadError(): KvReloadFailure | undefined {
    return this.lastError;
  }

  reloadCounts(): { succeeded: number; failed: number } {
    return { ...this.counts };
  }

  /** Version checks since start that could not read Vault (down, sealed, denied); the loaded CA kept signing. */
  failedPolls(): number {
    return this.pollFailures;
  }

  async sign(request: SignRequest, identity: SpiffeId): Promise<IssuedChain> {
    const m = this.material;
    if (!m) throw new AuthorityUnavailableError("vault-kv: CA not loaded from Vault KV yet");
    if (m.signer.cert.notAfter < new Date())
      throw new AuthorityUnavailableError(
        `vault-kv: the CA certificate from ${this.opts.certificate} expired at ${m.signer.cert.notAfter.toISOString()}; write a renewed CA to Vault KV`,
      );
    return (this.opts.leafSigner ?? signLeaf)(m, request, identity);
  }

  trustBundle(): string[] {
    return this.material?.rootsPem ?? [];
  }

  /** The validated CA now signing (undefined before start()); `meshvault cacerts --source vault-kv` writes it out. */
  currentMaterial(): CaMaterial | undefined {
    return this.material;
  }

  ready(): Readiness {
    return materialReadiness(
      this.material,
      "CA not loaded from Vault KV yet",
      `write a renewed CA to Vault KV (${this.describeRefs()}); it is picked up at the next poll`,
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    // Closing the connection first ends a poll waiting on a Vault that does not answer.
    const closing = (this.opts.ownsVault ?? true) ? this.opts.vault.close() : undefined;
    await this.polling;
    await closing;
  }
}
