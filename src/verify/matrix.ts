// The trust matrix of `meshvault verify` (pure: no I/O). Given what each source publishes
// (its channels' trust bundles, and sample chains it issued), it answers: does every channel
// of a source publish the same roots, does a leaf from A verify under B's bundle, what
// differs, and what to do about it.
import { X509Certificate } from "node:crypto";
import { isSelfSigned, parseCertificates, type Certificate } from "../pki/certificate.js";
import { verifyChain } from "../pki/chain.js";
import { formatName } from "../pki/name.js";

/** One place a source publishes a trust bundle (its /roots, a ConfigMap, an SDS ROOTCA, a file). */
export interface ChannelReading {
  name: string;
  /** The bundle as published (PEM), or undefined when it could not be read. */
  bundlePem?: string | undefined;
  /** Why it could not be read (names the thing and the fix). */
  error?: string | undefined;
}

/** A chain the source issued (a workload leaf, or an intermediate CA), leaf first, PEM. */
export interface SampleChain {
  what: string;
  chainPem: string;
}

export interface SourceReading {
  name: string;
  /** How the source was given, e.g. `ca:http://127.0.0.1:15014`. */
  spec: string;
  channels: ChannelReading[];
  samples: SampleChain[];
  /** Problems reading the source that are not about one channel (e.g. a test leaf refused). */
  notes: string[];
}

export interface RootInfo {
  fingerprint: string;
  subject: string;
  notAfter: string;
  expired: boolean;
}

export interface ChannelReport {
  name: string;
  roots: RootInfo[];
  error?: string;
}

export interface SourceReport {
  name: string;
  spec: string;
  channels: ChannelReport[];
  /** Roots every channel of this source publishes (what all its consumers trust). */
  trusted: RootInfo[];
  samples: { what: string; subject: string; issuer: string }[];
  notes: string[];
}

export interface PairResult {
  /** The source whose identities are checked. */
  from: string;
  /** The source whose trust bundle checks them. */
  to: string;
  ok: boolean;
  /** `leaf`: a chain issued by `from` was verified; `roots`: no chain, `to` trusts all of `from`'s roots. */
  how: "leaf" | "roots" | "none";
  reason?: string;
}

export interface VerifyReport {
  ok: boolean;
  sources: SourceReport[];
  matrix: PairResult[];
  differences: string[];
  fixes: string[];
}

export function fingerprint(c: Certificate): string {
  return new X509Certificate(c.der).fingerprint256;
}

function rootInfo(c: Certificate, now: Date): RootInfo {
  return {
    fingerprint: fingerprint(c),
    subject: formatName(c.subject) || "(empty subject)",
    notAfter: c.notAfter.toISOString(),
    expired: c.notAfter.getTime() <= now.getTime(),
  };
}

/** The roots in a bundle (self-signed certificates); throws a readable error on bad PEM. */
export function bundleRoots(pem: string, what: string): Certificate[] {
  return parseCertificates(pem, what).filter(isSelfSigned);
}

function short(r: RootInfo): string {
  return `${r.subject} [${r.fingerprint.slice(0, 23)}…]`;
}

interface Parsed {
  reading: SourceReading;
  channels: { name: string; roots: Certificate[]; error?: string }[];
  trusted: Certificate[];
  samples: { what: string; chain: Certificate[]; error?: string }[];
}

function parseSource(s: SourceReading): Parsed {
  const channels = s.channels.map((c) => {
    if (c.error !== undefined || c.bundlePem === undefined)
      return { name: c.name, roots: [], error: c.error ?? "not read" };
    try {
      const roots = bundleRoots(c.bundlePem, `${s.name} ${c.name}`);
      if (roots.length === 0) return { name: c.name, roots, error: "holds no self-signed root certificate" };
      return { name: c.name, roots };
    } catch (err) {
      return { name: c.name, roots: [], error: (err as Error).message };
    }
  });
  const readable = channels.filter((c) => c.error === undefined);
  const fp = (c: Certificate): string => fingerprint(c);
  const trusted = readable.length
    ? readable[0]!.roots.filter((r) => readable.every((c) => c.roots.some((x) => fp(x) === fp(r))))
    : [];
  const samples = s.samples.map((x) => {
    try {
      return { what: x.what, chain: parseCertificates(x.chainPem, `${s.name} ${x.what}`) };
    } catch (err) {
      return { what: x.what, chain: [], error: (err as Error).message };
    }
  });
  return { reading: s, channels, trusted, samples };
}

/** Builds the report. `now` is injectable so tests can place it. */
export function buildTrustMatrix(readings: SourceReading[], now = new Date()): VerifyReport {
  const parsed = readings.map(parseSource);
  const differences: string[] = [];
  const fixes: string[] = [];
  const sources: SourceReport[] = parsed.map((p) => {
    const s = p.reading;
    for (const n of s.notes) differences.push(`${s.name}: ${n}`);
    for (const c of p.channels) {
      if (c.error) {
        differences.push(`${s.name} ${c.name}: ${c.error}`);
        continue;
      }
      for (const r of c.roots)
        if (r.notAfter.getTime() <= now.getTime()) {
          differences.push(
            `${s.name} ${c.name}: root ${short(rootInfo(r, now))} expired at ${r.notAfter.toISOString()}`,
          );
          fixes.push(
            `rotate ${s.name}'s root (meshvault root rotate) and drop the expired one from its bundle`,
          );
        }
    }
    // Channels of one source must agree: a consumer reading another channel would trust other roots.
    const readable = p.channels.filter((c) => !c.error);
    const all = new Map<string, Certificate>();
    for (const c of readable) for (const r of c.roots) all.set(fingerprint(r), r);
    for (const c of readable) {
      const have = new Set(c.roots.map(fingerprint));
      for (const [f, r] of all)
        if (!have.has(f)) {
          const holders = readable
            .filter((o) => o.roots.some((x) => fingerprint(x) === f))
            .map((o) => o.name);
          differences.push(
            `${s.name} ${c.name} lacks root ${short(rootInfo(r, now))} that ${holders.join(", ")} publish${holders.length === 1 ? "es" : ""}`,
          );
          fixes.push(
            `${s.name}: make ${c.name} publish the same bundle as ${holders[0]} (a rotation in progress? check \`meshvault root status\`; ` +
              `a ConfigMap or file not updated? check the root publisher holds its Lease and can write)`,
          );
        }
    }
    return {
      name: s.name,
      spec: s.spec,
      channels: p.channels.map((c) => ({
        name: c.name,
        roots: c.roots.map((r) => rootInfo(r, now)),
        ...(c.error ? { error: c.error } : {}),
      })),
      trusted: p.trusted.map((r) => rootInfo(r, now)),
      samples: p.samples.map((x) => {
        const first = x.chain[0];
        return {
          what: x.what,
          subject: first
            ? (first.sans.uris[0] ?? (formatName(first.subject) || "(empty subject)"))
            : "(unreadable)",
          issuer: first ? formatName(first.issuer) : (x.error ?? ""),
        };
      }),
      notes: [...s.notes],
    };
  });

  const matrix: PairResult[] = [];
  for (const a of parsed) {
    for (const b of parsed) {
      const from = a.reading.name;
      const to = b.reading.name;
      if (b.trusted.length === 0) {
        matrix.push({ from, to, ok: false, how: "none", reason: `${to} publishes no readable trust bundle` });
        continue;
      }
      const chains = a.samples.filter((x) => x.chain.length > 0);
      if (chains.length > 0) {
        const failures: string[] = [];
        for (const x of chains) {
          const [leaf, ...rest] = x.chain;
          const bundle = new Set(b.trusted.map(fingerprint));
          const pool = rest.filter((c) => !bundle.has(fingerprint(c)));
          try {
            verifyChain(leaf!, pool, b.trusted, { at: now });
          } catch (err) {
            failures.push(
              `${a.reading.name}'s ${x.what} does not verify under ${to}'s bundle: ${(err as Error).message}`,
            );
          }
        }
        if (failures.length === 0) matrix.push({ from, to, ok: true, how: "leaf" });
        else {
          matrix.push({ from, to, ok: false, how: "leaf", reason: failures.join("; ") });
          differences.push(...failures);
          const missing = a.trusted.filter((r) => !b.trusted.some((x) => fingerprint(x) === fingerprint(r)));
          fixes.push(
            missing.length
              ? `${to} does not trust ${missing.map((r) => short(rootInfo(r, now))).join(", ")} from ${from}: issue both clusters' ` +
                  `intermediates from one root (the same Vault root mount, or an imported shared root), or publish ${from}'s root in ${to}'s bundle during a migration`
              : `${from}'s issued chain does not reach its own published roots: check its intermediate and \`meshvault cert inspect\` the chain`,
          );
        }
        continue;
      }
      // No chain from `a`: the best we can say is whether `b` trusts every root `a` publishes.
      const missing = a.trusted.filter((r) => !b.trusted.some((x) => fingerprint(x) === fingerprint(r)));
      if (a.trusted.length === 0)
        matrix.push({
          from,
          to,
          ok: false,
          how: "none",
          reason: `${from} publishes no readable trust bundle`,
        });
      else if (missing.length === 0) matrix.push({ from, to, ok: true, how: "roots" });
      else {
        const reason = `${to} does not trust ${from}'s root${missing.length > 1 ? "s" : ""} ${missing.map((r) => short(rootInfo(r, now))).join(", ")}`;
        matrix.push({ from, to, ok: false, how: "roots", reason });
        differences.push(reason);
        fixes.push(
          `publish the same root in ${from} and ${to} (one Vault root mount or an imported shared root), or add ${from}'s root to ${to}'s bundle`,
        );
      }
    }
  }
  const ok = differences.length === 0 && matrix.every((m) => m.ok);
  return { ok, sources, matrix, differences: [...new Set(differences)], fixes: [...new Set(fixes)] };
}

/** The human rendering: roots per source and channel, the matrix, differences and fixes. */
export function formatTrustReport(r: VerifyReport): string {
  const lines: string[] = [];
  for (const s of r.sources) {
    lines.push(`${s.name} (${s.spec})`);
    for (const c of s.channels) {
      if (c.error) {
        lines.push(`  ${c.name}: UNREADABLE: ${c.error}`);
        continue;
      }
      lines.push(`  ${c.name}:`);
      for (const root of c.roots)
        lines.push(
          `    ${root.fingerprint}  ${root.subject}  expires ${root.notAfter}${root.expired ? " (EXPIRED)" : ""}`,
        );
    }
    for (const x of s.samples) lines.push(`  sample ${x.what}: ${x.subject}, issued by ${x.issuer}`);
  }
  const names = r.sources.map((s) => s.name);
  const width = Math.max(9, ...names.map((n) => n.length));
  lines.push("", `leaf from (row) verifies under bundle of (column):`);
  lines.push(`${"".padEnd(width)}  ${names.map((n) => n.padEnd(width)).join("  ")}`);
  for (const from of names) {
    const cells = names.map((to) => {
      const m = r.matrix.find((x) => x.from === from && x.to === to);
      const mark = !m ? "?" : m.ok ? (m.how === "leaf" ? "ok" : "ok(roots)") : "FAIL";
      return mark.padEnd(width);
    });
    lines.push(`${from.padEnd(width)}  ${cells.join("  ")}`);
  }
  if (r.differences.length) {
    lines.push("", "differences:");
    for (const d of r.differences) lines.push(`  - ${d}`);
  }
  if (r.fixes.length) {
    lines.push("", "to fix:");
    for (const f of r.fixes) lines.push(`  - ${f}`);
  }
  lines.push("", r.ok ? "all sources trust each other" : "NOT all sources trust each other");
  return `${lines.join("\n")}\n`;
}
