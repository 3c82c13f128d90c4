// `meshvault cacerts`: keeps istiod's plug-in CA (ca-cert.pem, ca-key.pem,
// cert-chain.pem, root-cert.pem) filled with an intermediate from Vault and renews
// it before expiry: what cert-manager does in seed 002 and Gloo's istiod-agent in
// seed 003. What is already there is kept while valid and not yet due, so a
// restarted sidecar or a re-run job does not churn istiod's CA.
import { loadCaMaterial } from "../authority/ca-material.js";
import { layoutFiles, type CaCertsFiles, type CaCertsSink, type WriteResult } from "./cacerts-sinks.js";
import type { IntermediateSource } from "./intermediate-source.js";

export interface CaCertsLog {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export interface CaCertsOptions {
  source: IntermediateSource;
  sink: CaCertsSink;
  /** Also write tls.crt / tls.key / ca.crt. */
  tlsLayout?: boolean;
  /** Renew when this fraction of the lifetime has passed (default 0.5: seed 002's 360h of 720h). */
  renewAt?: number;
  log?: CaCertsLog;
  /** Backoff between failed attempts (default 1 s .. 5 min). */
  retryMinMs?: number;
  retryMaxMs?: number;
}

export interface CaCertsState {
  notAfter: Date;
  renewAt: Date;
  /** Intermediates issued by this process. */
  issued: number;
  failures: number;
  lastError?: string;
}

export interface SyncResult {
  action: "issued" | "kept";
  write: WriteResult;
  notAfter: Date;
  renewAt: Date;
}

interface Present {
  notBefore: Date;
  notAfter: Date;
}

/** The sink's current material when it is complete and consistent; undefined otherwise. */
function validPresent(files: CaCertsFiles | undefined): Present | undefined {
  const cert = files?.["ca-cert.pem"];
  const key = files?.["ca-key.pem"];
  if (!cert || !key) return undefined;
  try {
    const m = loadCaMaterial({
      certPem: cert,
      keyPem: key,
      chainPem: files["cert-chain.pem"],
      rootPem: files["root-cert.pem"],
      source: "existing cacerts",
    });
    return { notBefore: m.signer.cert.notBefore, notAfter: m.signer.cert.notAfter };
  } catch {
    return undefined;
  }
}

function dueAt(p: Present, renewAt: number): Date {
  const nb = p.notBefore.getTime();
  return new Date(nb + renewAt * (p.notAfter.getTime() - nb));
}

/** One pass: keep what is there if valid and not due, else issue and write. */
export async function syncCaCerts(o: CaCertsOptions): Promise<SyncResult> {
  const renewAt = o.renewAt ?? 0.5;
  const tls = o.tlsLayout ?? false;
  const existing = await o.sink.read();
  const present = validPresent(existing);
  if (existing && present && Date.now() < dueAt(present, renewAt).getTime()) {
    // Same material; only the layout may need fixing (e.g. --tls-layout added).
    const same = {
      caCertPem: existing["ca-cert.pem"]!,
      caKeyPem: existing["ca-key.pem"]!,
      certChainPem: existing["cert-chain.pem"] ?? existing["ca-cert.pem"]!,
      rootCertPem: existing["root-cert.pem"] ?? "",
      ...present,
    };
    const write = same.rootCertPem ? await o.sink.write(layoutFiles(same, tls)) : "unchanged";
    return { action: "kept", write, notAfter: present.notAfter, renewAt: dueAt(present, renewAt) };
  }
  if (existing && !present)
    o.log?.warn(`${o.sink.description} holds an incomplete or inconsistent CA: replacing it`);
  const issuedAt = new Date();
  const issued = await o.source.issueIntermediate();
  const write = await o.sink.write(layoutFiles(issued, tls));
  // Count the lifetime from now, not from notBefore: CAs backdate notBefore (Vault 30 s,
  // meshvault 2 min), which for a short TTL would make the new intermediate due at once.
  const p = {
    notBefore: issued.notBefore > issuedAt ? issued.notBefore : issuedAt,
    notAfter: issued.notAfter,
  };
  return { action: "issued", write, notAfter: issued.notAfter, renewAt: dueAt(p, renewAt) };
}

export interface CaCertsRunner {
  state(): CaCertsState | undefined;
  /** Resolves after the first successful pass (rejects only if stopped before one). */
  ready: Promise<SyncResult>;
  stop(): Promise<void>;
}

/** Long-running: a pass now, then one at each renewal time; failures retry with backoff. */
export function runCaCerts(o: CaCertsOptions): CaCertsRunner {
  const min = o.retryMinMs ?? 1000;
  const max = o.retryMaxMs ?? 300_000;
  let state: CaCertsState | undefined;
  let issued = 0;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let current: Promise<void> | undefined;
  let resolveReady!: (r: SyncResult) => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<SyncResult>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  ready.catch(() => {});

  const schedule = (ms: number): void => {
    if (stopped) return;
    // setTimeout overflows past ~24.8 days: wake up and re-check instead.
    timer = setTimeout(() => (current = pass()), Math.max(0, Math.min(ms, 2 ** 31 - 1)));
  };

  const pass = async (): Promise<void> => {
    try {
      const r = await syncCaCerts(o);
      if (r.action === "issued") issued++;
      failures = 0;
      state = { notAfter: r.notAfter, renewAt: r.renewAt, issued, failures };
      o.log?.info(
        `${o.sink.description}: ${r.action === "issued" ? `new intermediate from ${o.source.description}` : "current intermediate kept"} (${r.write}), valid until ${r.notAfter.toISOString()}, renewal at ${r.renewAt.toISOString()}`,
      );
      resolveReady(r);
      schedule(r.renewAt.getTime() - Date.now());
    } catch (err) {
      failures++;
      const msg = (err as Error).message;
      state = state ? { ...state, failures, lastError: msg } : undefined;
      const delay = Math.min(max, min * 2 ** Math.min(failures - 1, 20));
      o.log?.error(`cacerts: ${msg}; retrying in ${Math.round(delay / 1000)}s`);
      schedule(delay);
    }
  };

  current = pass();
  return {
    state: () => state,
    ready,
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await current;
      rejectReady(new Error("cacerts stopped before the first successful pass"));
    },
  };
}
