// What the status page and `meshvault status` show about a running CA server: readiness and
// its reason, the chain (roots, the signing intermediates, the server's own leaf) with
// fingerprints and expiries, and issuance over the last minutes. Read-only, built per request.
import { createHash } from "node:crypto";
import type { Authority } from "../authority/authority.js";
import { parseCertificates, type Certificate } from "../pki/certificate.js";
import { formatName } from "../pki/name.js";
import type { CaMetrics } from "./metrics.js";

export interface CertSummary {
  subject: string;
  issuer: string;
  serial: string;
  /** SHA-256 of the DER, colon-separated hex (as openssl x509 -fingerprint -sha256 prints it). */
  fingerprint: string;
  notBefore: string;
  notAfter: string;
  spiffeId?: string;
  dnsNames?: string[];
}

export interface IssuanceSample {
  /** End of the interval (ISO time). */
  at: string;
  seconds: number;
  issued: number;
  errors: number;
}

export interface Overview {
  kind: "server";
  now: string;
  authority: string;
  trustDomain: string;
  ready: boolean;
  reason?: string;
  vault?: { address: string };
  chain: { roots: CertSummary[]; intermediates: CertSummary[]; leaf?: CertSummary & { renewAt: string } };
  issuance: {
    issued: number;
    errors: Record<string, number>;
    /** Oldest first: what happened in each sampling interval of the last 15 minutes. */
    history: IssuanceSample[];
  };
}

export interface OverviewSource {
  authority: Authority;
  metrics: CaMetrics;
  trustDomain: string;
  vaultAddress?: string;
  /** The server's current serving chain (leaf first), once issued. */
  servingChainPem(): string | undefined;
  /** The same answer /readyz gives. */
  readiness(): { ready: true } | { ready: false; reason: string };
}

export function summarize(c: Certificate): CertSummary {
  const hex = createHash("sha256").update(c.der).digest("hex").toUpperCase();
  const s: CertSummary = {
    subject: formatName(c.subject) || "(empty subject)",
    issuer: formatName(c.issuer),
    serial: c.serialHex,
    fingerprint: hex.match(/../g)!.join(":"),
    notBefore: c.notBefore.toISOString(),
    notAfter: c.notAfter.toISOString(),
  };
  if (c.sans.uris[0]) s.spiffeId = c.sans.uris[0];
  if (c.sans.dnsNames.length) s.dnsNames = c.sans.dnsNames;
  return s;
}

async function totals(metrics: CaMetrics): Promise<{ issued: number; errors: Record<string, number> }> {
  const out = { issued: 0, errors: {} as Record<string, number> };
  for (const v of (await metrics.requests.get()).values) {
    if (v.labels.result === "issued") out.issued += v.value;
    else {
      const code = String(v.labels.code ?? "UNKNOWN");
      out.errors[code] = (out.errors[code] ?? 0) + v.value;
    }
  }
  return out;
}

const sumErrors = (e: Record<string, number>): number => Object.values(e).reduce((a, b) => a + b, 0);

/**
 * Samples the request counters every `intervalMs` (15 minutes kept), so the page can show
 * issuance over the last minutes without Prometheus. `stop()` ends the timer.
 */
export class IssuanceHistory {
  private samples: { t: number; issued: number; errors: number }[] = [];
  private readonly timer: NodeJS.Timeout;
  constructor(
    private readonly metrics: CaMetrics,
    private readonly intervalMs = 10_000,
  ) {
    void this.sample();
    this.timer = setInterval(() => void this.sample(), intervalMs);
    this.timer.unref();
  }
  private async sample(): Promise<void> {
    const t = await totals(this.metrics);
    this.samples.push({ t: Date.now(), issued: t.issued, errors: sumErrors(t.errors) });
    const keep = Math.ceil((15 * 60_000) / this.intervalMs) + 1;
    if (this.samples.length > keep) this.samples.splice(0, this.samples.length - keep);
  }
  /** Deltas between samples, plus the interval from the last sample to now. */
  async history(): Promise<IssuanceSample[]> {
    const now = await totals(this.metrics);
    const points = [...this.samples, { t: Date.now(), issued: now.issued, errors: sumErrors(now.errors) }];
    const out: IssuanceSample[] = [];
    for (let i = 1; i < points.length; i++) {
      const a = points[i - 1]!;
      const b = points[i]!;
      if (b.t - a.t < 1) continue;
      out.push({
        at: new Date(b.t).toISOString(),
        seconds: (b.t - a.t) / 1000,
        issued: b.issued - a.issued,
        errors: b.errors - a.errors,
      });
    }
    return out;
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

export async function buildOverview(src: OverviewSource, history: IssuanceHistory): Promise<Overview> {
  const r = src.readiness();
  const roots = src.authority
    .trustBundle()
    .flatMap((pem) => parseCertificates(pem, "trust bundle"))
    .map(summarize);
  const servingPem = src.servingChainPem();
  const serving = servingPem ? parseCertificates(servingPem, "serving chain") : [];
  const leafCert = serving[0];
  const rootFingerprints = new Set(roots.map((x) => x.fingerprint));
  const intermediates = serving
    .slice(1)
    .map(summarize)
    .filter((c) => !rootFingerprints.has(c.fingerprint));
  const t = await totals(src.metrics);
  const o: Overview = {
    kind: "server",
    now: new Date().toISOString(),
    authority: src.authority.kind,
    trustDomain: src.trustDomain,
    ready: r.ready,
    chain: { roots, intermediates },
    issuance: { issued: t.issued, errors: t.errors, history: await history.history() },
  };
  if (!r.ready) o.reason = r.reason;
  if (src.vaultAddress) o.vault = { address: src.vaultAddress };
  if (leafCert) {
    // The serving certificate renews at half its life (src/server/serving-cert.ts).
    const half = (leafCert.notBefore.getTime() + leafCert.notAfter.getTime()) / 2;
    o.chain.leaf = { ...summarize(leafCert), renewAt: new Date(half).toISOString() };
  }
  return o;
}
