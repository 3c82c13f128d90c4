// `meshvault cacerts --source vault-kv` (seed 001 with a stock istiod): istiod's plug-in CA
// is the CA pair kept in Vault KV (`vault:secret/data/pki/istiod#certificate` / `#privateKey`).
// The vault-kv authority does the reading, the validation (key matches, chain reaches the
// root) and the version polling; this writes each validated version to the sink and
// leaves the sink alone when a version is refused, so istiod keeps the last good CA.
import type { KvReloadEvent, VaultKvAuthority } from "../authority/vault/vault-kv.js";
import { describeCertificate } from "../pki/certificate.js";
import type { Log } from "../log/logger.js";
import { layoutFiles, type CaCertsSink, type WriteResult } from "./cacerts-sinks.js";
import { toIssued } from "./intermediate-source.js";

export interface KvCaCertsOptions {
  /** Not started yet: start() loads and validates the current version. */
  authority: VaultKvAuthority;
  sink: CaCertsSink;
  /** Also write tls.crt / tls.key / ca.crt. */
  tlsLayout?: boolean;
  log?: Log;
}

export interface KvCaCertsResult {
  write: WriteResult;
  /** The signing CA written, described. */
  ca: string;
  notAfter: Date;
}

async function writeCurrent(o: KvCaCertsOptions): Promise<KvCaCertsResult> {
  const m = o.authority.currentMaterial();
  if (!m) throw new Error("cacerts: the vault-kv CA is not loaded (start() first)");
  const issued = toIssued(m.signer.cert, m.signer.key, m.chain, m.roots, "CA in Vault KV");
  const write = await o.sink.write(layoutFiles(issued, o.tlsLayout ?? false));
  return { write, ca: describeCertificate(m.signer.cert), notAfter: issued.notAfter };
}

/** One pass: load and validate the CA in Vault KV, write it (unchanged when already there). */
export async function syncKvCaCerts(o: KvCaCertsOptions): Promise<KvCaCertsResult> {
  await o.authority.start();
  return writeCurrent(o);
}

export interface KvCaCertsRunner {
  /** The first write. */
  ready: Promise<KvCaCertsResult>;
  /** Stops following (the caller closes the authority). */
  stop(): Promise<void>;
}

/**
 * Long-running: writes the current version, then every new version the authority accepts;
 * a refused version is logged (by the authority, naming the reason) and not written.
 */
export function followKvCaCerts(o: KvCaCertsOptions): KvCaCertsRunner {
  let writing: Promise<unknown> = Promise.resolve();
  let unsubscribe: (() => void) | undefined;
  let stopped = false;
  const onReload = (e: KvReloadEvent): void => {
    if (stopped) return;
    if (!e.ok) {
      o.log?.warn(
        { sink: o.sink.description },
        "kept the last good CA (the new Vault KV version was refused)",
      );
      return;
    }
    // Writes are serialised: a quick second version never lands before the first.
    writing = writing.then(async () => {
      try {
        const r = await writeCurrent(o);
        o.log?.info(
          { sink: o.sink.description, ca: r.ca, write: r.write, notAfter: r.notAfter.toISOString() },
          "new CA from Vault KV",
        );
      } catch (err) {
        o.log?.error(
          { sink: o.sink.description, err: (err as Error).message },
          "writing the new CA from Vault KV failed",
        );
      }
    });
  };
  const ready = (async () => {
    // Subscribed before start(), whose poll timer may see a new version at any time.
    unsubscribe = o.authority.onReload(onReload);
    const first = writing.then(() => syncKvCaCerts(o));
    writing = first.catch(() => {});
    const r = await first;
    o.log?.info(
      { sink: o.sink.description, ca: r.ca, write: r.write, notAfter: r.notAfter.toISOString() },
      "CA from Vault KV; following new versions",
    );
    return r;
  })();
  ready.catch(() => {});
  return {
    ready,
    stop: async () => {
      stopped = true;
      unsubscribe?.();
      await ready.catch(() => {});
      await writing;
    },
  };
}
