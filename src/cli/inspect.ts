// `meshvault cert inspect`: what is in a certificate file, for humans (or scripts with
// --json). Answers the questions the guides answer with `openssl x509 -text` piped through
// grep: whose identity is this, who issued it, is it still valid, does the chain hold.
import { createHash, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import {
  isSelfSigned,
  parseCertificateDer,
  parseCertificates,
  type Certificate,
} from "../pki/certificate.js";
import { verifyChain } from "../pki/chain.js";
import { bytesEqual } from "../pki/der.js";
import { describeKey } from "../pki/keys.js";
import { formatName } from "../pki/name.js";
import { OID } from "../pki/oids.js";
import { decodePem } from "../pki/pem.js";
import { fsReason } from "../fs/errors.js";

export interface InspectOptions {
  /** PEM bundle of trusted roots; when omitted, the self-signed certificates in the input are the roots. */
  roots?: string;
  /** Point in time for validity and chain checks (default now). */
  at?: Date;
  format?: "text" | "json";
}

export interface CertificateReport {
  index: number;
  role: "leaf" | "intermediate CA" | "root CA" | "CA";
  subject: string;
  issuer: string;
  spiffeIds: string[];
  /** URI SANs that are not SPIFFE IDs. */
  uris: string[];
  dnsNames: string[];
  ipAddresses: string[];
  emails: string[];
  serial: string;
  notBefore: string;
  notAfter: string;
  /** Seconds until notAfter; negative once expired. */
  secondsLeft: number;
  status: "valid" | "expired" | "not yet valid";
  /** "23h 59m left", "EXPIRED 3d ago", "not valid for another 5m". */
  timeLeft: string;
  keyType: string;
  isCa: boolean;
  pathLen?: number;
  keyUsage: string[];
  extKeyUsage: string[];
  signatureAlgorithm: string;
  sha256Fingerprint: string;
}

export type ChainReport =
  | { status: "ok"; path: string[] }
  | { status: "failed"; reason: string }
  | { status: "unverified"; reason: string };

export interface InspectReport {
  certificates: CertificateReport[];
  chain: ChainReport;
  /** Things worth knowing that are not certificates: skipped PEM blocks, unused certificates. */
  notes: string[];
}

export class InspectError extends Error {
  override name = "InspectError";
}

const EKU_NAMES: Record<string, string> = {
  [OID.serverAuth]: "serverAuth",
  [OID.clientAuth]: "clientAuth",
  "1.3.6.1.5.5.7.3.3": "codeSigning",
  "1.3.6.1.5.5.7.3.4": "emailProtection",
  "1.3.6.1.5.5.7.3.8": "timeStamping",
  "1.3.6.1.5.5.7.3.9": "OCSPSigning",
  "2.5.29.37.0": "anyExtendedKeyUsage",
};

const SIGNATURE_NAMES: Record<string, string> = {
  [OID.sha256WithRSA]: "sha256WithRSAEncryption",
  [OID.sha384WithRSA]: "sha384WithRSAEncryption",
  [OID.sha512WithRSA]: "sha512WithRSAEncryption",
  [OID.rsaPss]: "rsassaPss",
  [OID.ecdsaSha256]: "ecdsa-with-SHA256",
  [OID.ecdsaSha384]: "ecdsa-with-SHA384",
  [OID.ecdsaSha512]: "ecdsa-with-SHA512",
  [OID.ed25519]: "ed25519",
  "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
  "1.2.840.10045.4.1": "ecdsa-with-SHA1",
};

/** Key type for display: meshvault's name when supported, otherwise what it is and why not. */
export function keyTypeOf(key: KeyObject): string {
  try {
    return describeKey(key);
  } catch (err) {
    const t = key.asymmetricKeyType ?? "unknown";
    const d = key.asymmetricKeyDetails ?? {};
    const what =
      t === "rsa" || t === "rsa-pss"
        ? `${t}-${d.modulusLength ?? "?"}`
        : t === "ec"
          ? `ec-${d.namedCurve ?? "?"}`
          : t;
    return `${what} (unsupported by meshvault: ${(err as Error).message})`;
  }
}

/** Two most significant units, floor: "23h 59m", "3d", "12m", "40s". */
export function formatDuration(ms: number): string {
  const s = Math.floor(Math.abs(ms) / 1000);
  const units: [string, number][] = [
    ["d", Math.floor(s / 86400)],
    ["h", Math.floor(s / 3600) % 24],
    ["m", Math.floor(s / 60) % 60],
    ["s", s % 60],
  ];
  const first = units.findIndex(([, v]) => v > 0);
  if (first === -1) return "0s";
  return units
    .slice(first, first + 2)
    .filter(([, v]) => v > 0)
    .map(([u, v]) => `${v}${u}`)
    .join(" ");
}

/** How a certificate is named in the chain line: a workload by its SPIFFE ID, a CA by its subject. */
function label(c: Certificate): string {
  const spiffe = c.sans.uris.find((u) => u.startsWith("spiffe://"));
  if (spiffe && !c.isCa) return spiffe;
  if (c.subject.length) return formatName(c.subject);
  return c.sans.uris[0] ?? c.sans.dnsNames[0] ?? `serial ${c.serialHex}`;
}

function describe(c: Certificate, index: number, at: Date): CertificateReport {
  const left = c.notAfter.getTime() - at.getTime();
  const status = at < c.notBefore ? "not yet valid" : left < 0 ? "expired" : "valid";
  const timeLeft =
    status === "expired"
      ? `EXPIRED ${formatDuration(left)} ago`
      : status === "not yet valid"
        ? `NOT YET VALID, starts in ${formatDuration(c.notBefore.getTime() - at.getTime())}`
        : `${formatDuration(left)} left`;
  const role: CertificateReport["role"] = !c.isCa
    ? "leaf"
    : isSelfSigned(c)
      ? "root CA"
      : index === 0
        ? "CA"
        : "intermediate CA";
  const report: CertificateReport = {
    index: index + 1,
    role,
    subject: formatName(c.subject),
    issuer: formatName(c.issuer),
    spiffeIds: c.sans.uris.filter((u) => u.startsWith("spiffe://")),
    uris: c.sans.uris.filter((u) => !u.startsWith("spiffe://")),
    dnsNames: c.sans.dnsNames,
    ipAddresses: c.sans.ipAddresses,
    emails: c.sans.emails,
    serial: c.serialHex,
    notBefore: c.notBefore.toISOString(),
    notAfter: c.notAfter.toISOString(),
    secondsLeft: Math.floor(left / 1000),
    status,
    timeLeft,
    keyType: keyTypeOf(c.publicKey),
    isCa: c.isCa,
    keyUsage: c.keyUsage ?? [],
    extKeyUsage: (c.extKeyUsage ?? []).map((o) => EKU_NAMES[o] ?? o),
    signatureAlgorithm: SIGNATURE_NAMES[c.signatureAlgorithm] ?? c.signatureAlgorithm,
    sha256Fingerprint: createHash("sha256")
      .update(c.der)
      .digest("hex")
      .toUpperCase()
      .replace(/(..)(?!$)/g, "$1:"),
  };
  if (c.pathLen !== undefined) report.pathLen = c.pathLen;
  return report;
}

function checkChain(
  certs: Certificate[],
  explicitRoots: Certificate[] | undefined,
  at: Date,
  notes: string[],
): ChainReport {
  const roots = explicitRoots ?? certs.filter(isSelfSigned);
  if (roots.length === 0)
    return {
      status: "unverified",
      reason: "no root to verify against: the file has no self-signed certificate; pass --roots <file>",
    };
  const leaf = certs[0]!;
  const rootSet = new Set(roots.map((r) => Buffer.from(r.der).toString("base64")));
  const intermediates = certs.slice(1).filter((c) => !rootSet.has(Buffer.from(c.der).toString("base64")));
  try {
    let path = verifyChain(leaf, intermediates, roots, { at });
    // A trusted root inspected on its own comes back as [root, root].
    if (path.length === 2 && bytesEqual(path[0]!.der, path[1]!.der)) path = [path[0]!];
    const used = new Set(path.map((c) => Buffer.from(c.der).toString("base64")));
    certs.forEach((c, i) => {
      if (!used.has(Buffer.from(c.der).toString("base64")))
        notes.push(`certificate #${i + 1} (${label(c)}) is not part of the verified chain`);
    });
    return { status: "ok", path: path.map(label) };
  } catch (err) {
    return { status: "failed", reason: (err as Error).message };
  }
}

function parseInput(input: string | Uint8Array, notes: string[], what: string): Certificate[] {
  const text = typeof input === "string" ? input : Buffer.from(input).toString("latin1");
  if (!text.includes("-----BEGIN")) {
    // Not PEM: try a single DER certificate (what `openssl x509 -outform der` writes).
    if (typeof input === "string") throw new InspectError(`${what}: no PEM CERTIFICATE block found`);
    try {
      return [parseCertificateDer(new Uint8Array(input))];
    } catch (err) {
      throw new InspectError(`${what}: neither PEM nor a DER certificate (${(err as Error).message})`);
    }
  }
  try {
    for (const b of decodePem(text))
      if (b.type !== "CERTIFICATE") notes.push(`skipped a ${b.type} block (only certificates are inspected)`);
    return parseCertificates(text, what);
  } catch (err) {
    throw new InspectError((err as Error).message);
  }
}

/** Inspects every certificate in `input` (PEM bundle, or DER bytes) and verifies the chain. */
export function inspectReport(
  input: string | Uint8Array,
  opts: Omit<InspectOptions, "format"> = {},
  what = "input",
): InspectReport {
  const at = opts.at ?? new Date();
  const notes: string[] = [];
  const certs = parseInput(input, notes, what);
  const roots = opts.roots !== undefined ? parseInput(opts.roots, [], "roots") : undefined;
  const certificates = certs.map((c, i) => describe(c, i, at));
  const chain = checkChain(certs, roots, at, notes);
  return { certificates, chain, notes };
}

function line(name: string, value: string): string {
  return `  ${`${name}:`.padEnd(16)}${value}`;
}

export function formatReport(r: InspectReport): string {
  const out: string[] = [];
  const n = r.certificates.length;
  for (const c of r.certificates) {
    out.push(`certificate ${c.index} of ${n} (${c.role})`);
    out.push(line("subject", c.subject));
    out.push(line("issuer", c.issuer));
    for (const id of c.spiffeIds) out.push(line("spiffe id", id));
    if (c.uris.length) out.push(line("uris", c.uris.join(", ")));
    if (c.dnsNames.length) out.push(line("dns names", c.dnsNames.join(", ")));
    if (c.ipAddresses.length) out.push(line("ip addresses", c.ipAddresses.join(", ")));
    if (c.emails.length) out.push(line("emails", c.emails.join(", ")));
    out.push(line("serial", c.serial));
    out.push(line("not before", c.notBefore));
    out.push(line("not after", `${c.notAfter} (${c.timeLeft})`));
    out.push(line("key", c.keyType));
    out.push(line("ca", c.isCa ? `yes${c.pathLen !== undefined ? `, pathLen ${c.pathLen}` : ""}` : "no"));
    if (c.keyUsage.length) out.push(line("key usage", c.keyUsage.join(", ")));
    if (c.extKeyUsage.length) out.push(line("ext key usage", c.extKeyUsage.join(", ")));
    out.push(line("signature", c.signatureAlgorithm));
    out.push(line("sha256", c.sha256Fingerprint));
    out.push("");
  }
  for (const note of r.notes) out.push(`note: ${note}`);
  const ch = r.chain;
  out.push(
    ch.status === "ok"
      ? `chain: OK (${ch.path.join(" -> ")})`
      : ch.status === "failed"
        ? `chain: FAILED: ${ch.reason}`
        : `chain: NOT VERIFIED: ${ch.reason}`,
  );
  return `${out.join("\n")}\n`;
}

/** The report as text (default) or JSON. */
export function inspectCertificates(pemText: string | Uint8Array, opts: InspectOptions = {}): string {
  const report = inspectReport(pemText, opts);
  return opts.format === "json" ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report);
}

export interface RunInspectOptions {
  /** Path of a PEM file with the roots to trust. */
  roots?: string;
  json?: boolean;
  at?: Date;
  stdin?: AsyncIterable<Buffer | string>;
  stdout?: { write(s: string): unknown };
}

async function readAll(stream: AsyncIterable<Buffer | string>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  return Buffer.concat(parts);
}

async function readInput(path: string, stdin: AsyncIterable<Buffer | string>): Promise<Buffer> {
  if (path === "-") return readAll(stdin);
  try {
    return await readFile(path);
  } catch (err) {
    throw new InspectError(`cannot read ${path}: ${fsReason(err)}`);
  }
}

/**
 * Reads `path` (or stdin for "-"), prints the report, and returns the exit code:
 * 0 when the chain verifies (or there is nothing to verify it against), 1 when it fails.
 * Unreadable input throws an InspectError naming the file.
 */
export async function runCertInspect(path: string, opts: RunInspectOptions = {}): Promise<number> {
  if (path === "-" && opts.roots === "-")
    throw new InspectError("only one of the certificate file and --roots can be read from stdin");
  const input = await readInput(path, opts.stdin ?? process.stdin);
  const rootsText =
    opts.roots !== undefined ? await readInput(opts.roots, opts.stdin ?? process.stdin) : undefined;
  const report = inspectReport(
    input,
    { ...(rootsText ? { roots: rootsText.toString("utf8") } : {}), ...(opts.at ? { at: opts.at } : {}) },
    path === "-" ? "stdin" : path,
  );
  (opts.stdout ?? process.stdout).write(
    opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report),
  );
  return report.chain.status === "failed" ? 1 : 0;
}

/** `meshvault cert inspect` (declared in commands/cert.ts): exit 2 when the input cannot be read. */
export async function runCertInspectCommand(
  file: string,
  o: { roots?: string; json?: boolean },
): Promise<void> {
  try {
    process.exitCode = await runCertInspect(file, {
      ...(o.roots !== undefined ? { roots: o.roots } : {}),
      ...(o.json ? { json: true } : {}),
    });
  } catch (err) {
    process.stderr.write(`meshvault cert inspect: ${(err as Error).message}\n`);
    process.exitCode = 2;
  }
}
