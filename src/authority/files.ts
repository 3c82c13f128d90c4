// The `files` authority: an operator-provided CA in a directory, in Istio's plug-in CA
// layout (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) or the kubernetes.io/tls
// layout that cert-manager / istio-csr write (tls.crt, tls.key, ca.crt). The directory is
// usually a mounted Secret, so it is watched and re-read on change; a new set replaces the
// old one only when it validates completely, otherwise the old one keeps signing.
import { createHash, createPrivateKey, type KeyObject } from "node:crypto";
import { watch, type FSWatcher } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { parseCertificates, describeCertificate, type Certificate } from "../pki/certificate.js";
import { privateKeyMatches } from "../pki/keys.js";
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
import { ReloadListeners } from "./reload-listeners.js";
import { fsReason } from "../fs/errors.js";
import { isAbortError, sleep, systemClock, type CancelTimer, type Clock } from "../timing/clock.js";
import { silentLog, type Log } from "../log/logger.js";

export interface FilesAuthorityOptions {
  /** Signs leaves somewhere else (the server's issuance workers); default signLeaf here. */
  leafSigner?: LeafSigner;
  /** Directory holding the CA files, e.g. `/etc/cacerts` (the `cacerts` Secret). */
  dir: string;
  /** Fallback poll for changes fs.watch misses (network filesystems, re-created dirs). Default 10 s; 0 disables. */
  pollIntervalMs?: number;
  /** Quiet time after the last change before the files are read. Default 200 ms. */
  debounceMs?: number;
  /** `log.child({ component: "authority" })` from the server's logger. */
  log?: Log;
  /** Time for the poll, the debounce and the quiet periods (tests drive a fake one). */
  clock?: Clock;
}

/** Which file names a directory uses. */
export interface FilesLayout {
  name: "plugin" | "tls";
  cert: string;
  key: string;
  /** Optional: certificates from the signing CA up to the root. */
  chain?: string;
  root: string;
}

export const PLUGIN_LAYOUT: FilesLayout = {
  name: "plugin",
  cert: "ca-cert.pem",
  key: "ca-key.pem",
  chain: "cert-chain.pem",
  root: "root-cert.pem",
};
/** tls.crt may carry the signing CA followed by its chain. */
export const TLS_LAYOUT: FilesLayout = { name: "tls", cert: "tls.crt", key: "tls.key", root: "ca.crt" };

export type ReloadEvent =
  | {
      ok: true;
      at: Date;
      layout: FilesLayout["name"];
      /** SHA-256 over the file contents that were loaded. */
      fingerprint: string;
      /** Subject / serial of the new signing CA. */
      signingCa: string;
      notAfter: Date;
      rootsChanged: boolean;
    }
  | { ok: false; at: Date; error: string };

export interface ReloadFailure {
  at: Date;
  message: string;
}

export class FilesAuthorityError extends Error {
  override name = "FilesAuthorityError";
}

const DEFAULT_POLL_MS = 10_000;
const DEFAULT_DEBOUNCE_MS = 200;
/**
 * A refused set is re-read after each quiet period until it stops changing (then it is
 * reported), but at most this often, so a writer that never settles is still reported.
 */
const MAX_SETTLE_ATTEMPTS = 20;

interface FileSet {
  layout: FilesLayout;
  texts: Map<string, string>;
  fingerprint: string;
}

function certKey(c: Certificate): string {
  return Buffer.from(c.der).toString("base64");
}

export class FilesAuthority implements Authority {
  readonly kind = "files";
  private material: CaMaterial | undefined;
  private layout: FilesLayout | undefined;
  private fingerprint: string | undefined;
  /** Fingerprint of the last refused set, so a bad set is reported once, not on every poll. */
  private failedFingerprint: string | undefined;
  private lastError: ReloadFailure | undefined;
  private counts = { succeeded: 0, failed: 0 };
  private readonly listeners = new ReloadListeners<ReloadEvent>(
    "files authority: reload listener",
    () => this.log,
  );
  private readonly log: Log;
  private watcher: FSWatcher | undefined;
  private cancelPoll: CancelTimer | undefined;
  private cancelDebounce: CancelTimer | undefined;
  /** Aborted by close(): ends a quiet-period wait at once. */
  private readonly closing = new AbortController();
  private readonly clock: Clock;
  /** Reloads run one at a time; a change during a reload queues exactly one more. */
  private running: Promise<void> | undefined;
  private again = false;
  private closed = false;

  constructor(private readonly opts: FilesAuthorityOptions) {
    this.clock = opts.clock ?? systemClock;
    this.log = opts.log ?? silentLog;
  }

  private get debounceMs(): number {
    return this.opts.debounceMs ?? DEFAULT_DEBOUNCE_MS;
  }

  async start(): Promise<void> {
    const set = await this.readSet();
    const material = await this.validate(set);
    this.install(set, material);
    this.log.info(
      { dir: this.opts.dir, layout: this.layoutDescription(set.layout), ...signingFields(material) },
      "files authority: loaded the CA files",
    );
    this.startWatching();
  }

  // ---- reading and validating -------------------------------------------------------

  private layoutDescription(l: FilesLayout): string {
    return [l.cert, l.key, l.chain, l.root].filter(Boolean).join(", ");
  }

  private missingHelp(): string {
    return `the directory must hold either ${this.layoutDescription(PLUGIN_LAYOUT)} (Istio plug-in CA; cert-chain.pem optional) or ${this.layoutDescription(TLS_LAYOUT)} (kubernetes.io/tls); mount the CA Secret there`;
  }

  /** Picks the layout the way istiod does: tls.crt present means the TLS layout. */
  private async detectLayout(): Promise<FilesLayout> {
    const exists = async (name: string): Promise<boolean> => {
      try {
        await stat(join(this.opts.dir, name));
        return true;
      } catch {
        return false;
      }
    };
    try {
      const s = await stat(this.opts.dir);
      if (!s.isDirectory())
        throw new FilesAuthorityError(`${this.opts.dir} is not a directory: ${this.missingHelp()}`);
    } catch (err) {
      if (err instanceof FilesAuthorityError) throw err;
      throw new FilesAuthorityError(
        `CA directory ${this.opts.dir} cannot be read (${fsReason(err)}): ${this.missingHelp()}`,
      );
    }
    if (await exists(TLS_LAYOUT.cert)) return TLS_LAYOUT;
    if ((await exists(PLUGIN_LAYOUT.cert)) || (await exists(PLUGIN_LAYOUT.key))) return PLUGIN_LAYOUT;
    throw new FilesAuthorityError(
      `no CA files in ${this.opts.dir}: neither ${PLUGIN_LAYOUT.cert} nor ${TLS_LAYOUT.cert} is there; ${this.missingHelp()}`,
    );
  }

  private async readSet(): Promise<FileSet> {
    const layout = await this.detectLayout();
    const texts = new Map<string, string>();
    const hash = createHash("sha256").update(layout.name);
    for (const name of [layout.cert, layout.key, layout.chain, layout.root]) {
      if (!name) continue;
      const path = join(this.opts.dir, name);
      let text: string | undefined;
      try {
        text = await readFile(path, "utf8");
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT" && name === layout.chain) text = undefined;
        else if (code === "ENOENT")
          throw new FilesAuthorityError(`${path} is missing: ${this.missingHelp()}`);
        else
          throw new FilesAuthorityError(
            `cannot read ${path} (${code ?? (err as Error).message}): give meshvault read access to it`,
          );
      }
      if (text !== undefined) texts.set(name, text);
      hash.update(`\0${name}\0${text === undefined ? "-" : `+${text}`}`);
    }
    return { layout, texts, fingerprint: hash.digest("hex") };
  }

  /** Checks each file on its own first, so that errors name the file and the fix. */
  private async validate(set: FileSet, at = new Date()): Promise<CaMaterial> {
    const { layout, texts } = set;
    const dir = this.opts.dir;
    const p = (name: string): string => join(dir, name);
    const certText = texts.get(layout.cert)!;
    const keyText = texts.get(layout.key)!;
    const rootText = texts.get(layout.root)!;
    const chainText = layout.chain ? texts.get(layout.chain) : undefined;

    let certs: Certificate[];
    try {
      certs = parseCertificates(certText, p(layout.cert));
    } catch (err) {
      throw new FilesAuthorityError(
        `${(err as Error).message}: it must hold the signing CA certificate in PEM`,
      );
    }
    let key: KeyObject;
    try {
      key = createPrivateKey(keyText);
    } catch {
      // Node's parser message is not useful and must not risk echoing key material.
      throw new FilesAuthorityError(
        `${p(layout.key)} is not a readable private key: it must hold the CA's unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)`,
      );
    }
    const caCert = certs[0]!;
    if (!privateKeyMatches(key, caCert.spki))
      throw new FilesAuthorityError(
        `${p(layout.key)} does not match the certificate in ${p(layout.cert)} (${describeCertificate(caCert)}): the key and certificate come from different CAs; put the key that belongs to this certificate`,
      );
    if (at > caCert.notAfter)
      throw new FilesAuthorityError(
        `the CA certificate in ${p(layout.cert)} (${describeCertificate(caCert)}) expired at ${caCert.notAfter.toISOString()}: replace the files with a renewed CA`,
      );
    if (at < caCert.notBefore)
      throw new FilesAuthorityError(
        `the CA certificate in ${p(layout.cert)} is not valid before ${caCert.notBefore.toISOString()}: check the clock or the certificate`,
      );
    try {
      if (chainText?.trim()) parseCertificates(chainText, p(layout.chain!));
      parseCertificates(rootText, p(layout.root));
    } catch (err) {
      throw new FilesAuthorityError(`${(err as Error).message}: it must hold PEM certificates`);
    }
    let material: CaMaterial;
    try {
      material = loadCaMaterial(
        {
          certPem: certText,
          keyPem: key,
          ...(chainText !== undefined ? { chainPem: chainText } : {}),
          rootPem: rootText,
          source: `CA files in ${dir}`,
        },
        at,
      );
    } catch (err) {
      const chainFiles = [layout.cert, layout.chain].filter(Boolean).join(" and ");
      throw new FilesAuthorityError(
        `${(err as Error).message}; ${chainFiles} must lead from the signing CA to a root in ${p(layout.root)}: check that the files come from the same CA hierarchy`,
      );
    }
    await this.checkKeyMode(p(layout.key));
    return material;
  }

  private async checkKeyMode(path: string): Promise<void> {
    try {
      const mode = (await stat(path)).mode;
      if ((mode & 0o077) !== 0)
        this.log.warn(
          { path, mode: (mode & 0o777).toString(8) },
          "the CA key is readable by group or others: chmod 600 it, or set defaultMode: 0400 on the Secret volume",
        );
    } catch {
      // Already read successfully; a vanished file shows up on the next reload.
    }
  }

  private install(set: FileSet, material: CaMaterial): void {
    // One assignment: a sign() that already picked up the old material finishes with it.
    this.material = material;
    this.layout = set.layout;
    this.fingerprint = set.fingerprint;
    this.failedFingerprint = undefined;
    this.lastError = undefined;
  }

  // ---- watching and reloading -------------------------------------------------------

  private startWatching(): void {
    try {
      // Watch the directory, not the files: a Kubernetes Secret volume swaps its `..data`
      // symlink, so the files themselves never change in place.
      this.watcher = watch(this.opts.dir, { persistent: false }, () => this.schedule());
      this.watcher.on("error", (err) => {
        this.log.warn(
          { dir: this.opts.dir, err: err.message },
          "files authority: watching the directory failed; relying on polling",
        );
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch (err) {
      this.log.warn(
        { dir: this.opts.dir, err: (err as Error).message },
        "files authority: cannot watch the directory; relying on polling",
      );
    }
    const poll = this.opts.pollIntervalMs ?? DEFAULT_POLL_MS;
    if (poll > 0) {
      const every = (): void => {
        this.cancelPoll = this.clock.setTimer(() => {
          this.schedule(0);
          every();
        }, poll);
      };
      every();
    }
  }

  /** Debounces bursts: files of one update are written one after another. */
  private schedule(delay = this.debounceMs): void {
    if (this.closed) return;
    this.cancelDebounce?.();
    this.cancelDebounce = this.clock.setTimer(() => {
      this.cancelDebounce = undefined;
      void this.reload();
    }, delay);
  }

  /** One quiet period; false when close() ended it. */
  private async quietPeriod(): Promise<boolean> {
    try {
      await sleep(this.debounceMs, this.closing.signal, this.clock);
      return true;
    } catch (err) {
      if (isAbortError(err)) return false;
      throw err;
    }
  }

  /**
   * Re-reads the directory now and swaps in the new set when it differs and validates.
   * Resolves when this (and any queued) reload is done; never rejects.
   */
  async reload(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.reloadOnce();
        } while (this.again && !this.closed);
      } finally {
        // Cleared in the same tick the loop ends, so a later reload() cannot join a finished run.
        this.running = undefined;
      }
    })();
    return this.running;
  }

  private async reloadOnce(): Promise<void> {
    let lastMessage = "";
    /** Fingerprint of the set the previous attempt of this round refused. */
    let refused: string | undefined;
    for (let attempt = 0; attempt < MAX_SETTLE_ATTEMPTS; attempt++) {
      if (this.closed) return;
      let set: FileSet | undefined;
      let fingerprint: string;
      try {
        set = await this.readSet();
        fingerprint = set.fingerprint;
      } catch (err) {
        lastMessage = (err as Error).message;
        fingerprint = `unreadable:${lastMessage}`;
      }
      if (fingerprint === this.failedFingerprint) return; // already reported
      if (fingerprint === this.fingerprint) {
        // Back to the set in use (a refused update was reverted): the old error no longer applies.
        if (this.lastError)
          this.log.info({ dir: this.opts.dir }, "files authority: the CA files are back to the loaded set");
        this.failedFingerprint = undefined;
        this.lastError = undefined;
        return;
      }
      // The same bad set twice, one quiet period apart: the writer is done and it is bad.
      if (fingerprint === refused) break;
      refused = fingerprint;
      if (set) {
        try {
          const material = await this.validate(set);
          const previous = this.material;
          this.install(set, material);
          this.counts.succeeded++;
          const rootsChanged =
            !previous ||
            previous.roots.map(certKey).sort().join() !== material.roots.map(certKey).sort().join();
          this.log.info(
            { dir: this.opts.dir, ...signingFields(material) },
            "files authority: reloaded the CA files",
          );
          if (rootsChanged)
            this.log.warn(
              { dir: this.opts.dir },
              "files authority: the root certificate changed; workloads trusting only the old root reject certificates signed from now on until they receive the new trust bundle",
            );
          this.listeners.emit({
            ok: true,
            at: new Date(),
            layout: set.layout.name,
            fingerprint: set.fingerprint,
            signingCa: describeCertificate(material.signer.cert),
            notAfter: material.signer.cert.notAfter,
            rootsChanged,
          });
          return;
        } catch (err) {
          lastMessage = (err as Error).message;
        }
      }
      // Possibly a half-written update (files land one by one): give the writer time, look again.
      this.log.debug(
        { dir: this.opts.dir, reason: lastMessage, retryInMs: this.debounceMs },
        "files authority: the CA files are not a valid set yet; reading them again",
      );
      if (!(await this.quietPeriod())) return;
    }
    if (this.closed) return;
    this.failedFingerprint = refused;
    this.counts.failed++;
    this.lastError = { at: new Date(), message: lastMessage };
    this.log.error(
      { dir: this.opts.dir, reason: lastMessage },
      "files authority: refused the new CA files and kept signing with the previous CA",
    );
    this.listeners.emit({ ok: false, at: this.lastError.at, error: lastMessage });
  }

  /** Called after every reload attempt that saw changed files; returns an unsubscribe function. */
  onReload(listener: (e: ReloadEvent) => void): () => void {
    return this.listeners.add(listener);
  }

  /** Why the most recent changed set was refused; cleared by the next successful load. */
  lastReloadError(): ReloadFailure | undefined {
    return this.lastError;
  }

  /** Totals for metrics, e.g. `meshvault_ca_reloads_total{result="failure"}`. */
  reloadCounts(): { succeeded: number; failed: number } {
    return { ...this.counts };
  }

  // ---- Authority ------------------------------------------------------------------------

  async sign(request: SignRequest, identity: SpiffeId): Promise<IssuedChain> {
    const m = this.material;
    if (!m) throw new AuthorityUnavailableError(`files authority: CA in ${this.opts.dir} is not loaded`);
    if (m.signer.cert.notAfter < new Date())
      throw new AuthorityUnavailableError(
        `files authority: the CA certificate in ${this.opts.dir} expired at ${m.signer.cert.notAfter.toISOString()}; replace the files with a renewed CA`,
      );
    return (this.opts.leafSigner ?? signLeaf)(m, request, identity);
  }

  trustBundle(): string[] {
    return this.material?.rootsPem ?? [];
  }

  ready(): Readiness {
    return materialReadiness(
      this.material,
      `CA files in ${this.opts.dir} not loaded yet`,
      `put a renewed CA into ${this.opts.dir} (it is reloaded by itself)`,
    );
  }

  /** The signing material, for the server's own serving certificate. */
  current(): CaMaterial | undefined {
    return this.material;
  }

  /** Which layout the directory currently uses. */
  currentLayout(): FilesLayout | undefined {
    return this.layout;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    this.closing.abort();
    this.cancelPoll?.();
    this.cancelDebounce?.();
    await this.running;
  }
}

/** The signing CA as log fields. */
function signingFields(m: CaMaterial): { signingCa: string; notAfter: string } {
  return { signingCa: describeCertificate(m.signer.cert), notAfter: m.signer.cert.notAfter.toISOString() };
}
