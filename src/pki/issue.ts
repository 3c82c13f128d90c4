// Certificate issuance: SPIFFE X.509-SVID leaves as Istio issues them, and CA certificates.
import { createPublicKey, randomFillSync, type KeyObject } from "node:crypto";
import {
  bitString,
  bytesEqual,
  concat,
  explicit,
  oid,
  readNode,
  seq,
  smallInteger,
  time,
  unsignedInteger,
} from "./der.js";
import { keyIdentifier, parseCertificateDer, type Certificate } from "./certificate.js";
import {
  encodeAki,
  encodeBasicConstraints,
  encodeDnsSans,
  encodeExtension,
  encodeExtKeyUsage,
  encodeKeyUsage,
  encodeSki,
  encodeUriSans,
} from "./extensions.js";
import {
  describeKey,
  privateKeyMatches,
  signatureSchemeFor,
  signWith,
  spkiDer,
  type SignatureScheme,
} from "./keys.js";
import { encodeName, formatName, type NameFields } from "./name.js";
import { OID } from "./oids.js";
import { encodePem } from "./pem.js";

/** Workload certificates start 2 minutes in the past, as Istio's do, to absorb clock skew. */
export const BACKDATE_MS = 2 * 60 * 1000;

export class IssueError extends Error {
  override name = "IssueError";
}

/** A CA that can sign: its certificate, key, and what it puts in every child. */
export interface Signer {
  cert: Certificate;
  key: KeyObject;
  scheme: SignatureScheme;
  /** Key identifier placed in children's AuthorityKeyIdentifier. */
  keyId: Uint8Array;
}

export function createSigner(cert: Certificate, key: KeyObject): Signer {
  if (!privateKeyMatches(key, cert.spki))
    throw new IssueError("CA private key does not match the CA certificate's public key");
  if (!cert.isCa) throw new IssueError("signing certificate is not a CA (basicConstraints CA:false)");
  if (cert.keyUsage && !cert.keyUsage.includes("keyCertSign"))
    throw new IssueError("signing certificate's keyUsage lacks keyCertSign");
  return {
    cert,
    key,
    scheme: signatureSchemeFor(describeKey(cert.publicKey)),
    keyId: cert.subjectKeyId ?? keyIdentifier(cert.spki),
  };
}

// Serials come from a pooled CSPRNG buffer: one randomFillSync per 256 certificates
// instead of one per certificate, which showed up in profiles of the issue path.
const POOL_SIZE = 4096;
const pool = new Uint8Array(POOL_SIZE);
let poolPos = POOL_SIZE;

/** 128 random bits, positive (the DER encoder adds a sign byte when the top bit is set). */
export function randomSerial(): Uint8Array {
  if (poolPos + 16 > POOL_SIZE) {
    randomFillSync(pool);
    poolPos = 0;
  }
  const b = pool.slice(poolPos, poolPos + 16);
  poolPos += 16;
  if (b.every((x) => x === 0)) b[15] = 1;
  return b;
}

function validity(notBefore: Date, notAfter: Date): Uint8Array {
  return seq(time(notBefore), time(notAfter));
}

function signTbs(signer: Signer, tbs: Uint8Array): Uint8Array {
  return seq(tbs, signer.scheme.algorithmIdentifier, bitString(signWith(signer.key, signer.scheme, tbs)));
}

const V3 = explicit(0, smallInteger(2));

// KU, EKU, basicConstraints and AKI are the same in every leaf a signer issues for one key
// family: encoded once per signer instead of per certificate (fewer small allocations on the
// issue hot path). keyEncipherment is for RSA keys only (RFC 8813 3 forbids it for ECDSA,
// RFC 8410 5 for Ed25519); digitalSignature is always there.
const fixedExtensions = new WeakMap<Signer, { rsa: Uint8Array; other: Uint8Array }>();
function leafFixedExtensions(signer: Signer, rsa: boolean): Uint8Array {
  let ext = fixedExtensions.get(signer);
  if (!ext) {
    const rest = concat(
      encodeExtension(OID.extKeyUsage, false, encodeExtKeyUsage([OID.serverAuth, OID.clientAuth])),
      encodeExtension(OID.basicConstraints, true, encodeBasicConstraints(false)),
      encodeExtension(OID.authorityKeyIdentifier, false, encodeAki(signer.keyId)),
    );
    ext = {
      rsa: concat(
        encodeExtension(OID.keyUsage, true, encodeKeyUsage(["digitalSignature", "keyEncipherment"])),
        rest,
      ),
      other: concat(encodeExtension(OID.keyUsage, true, encodeKeyUsage(["digitalSignature"])), rest),
    };
    fixedExtensions.set(signer, ext);
  }
  return rsa ? ext.rsa : ext.other;
}

const RSA_ALGORITHM_OID = oid(OID.rsaEncryption);
/** True when a DER SubjectPublicKeyInfo is an RSA key (its AlgorithmIdentifier starts with rsaEncryption). */
function isRsaSpki(spki: Uint8Array): boolean {
  const { node } = readNode(spki, 0);
  const { node: alg } = readNode(node.value, 0);
  return bytesEqual(alg.value.subarray(0, RSA_ALGORITHM_OID.length), RSA_ALGORITHM_OID);
}

export interface LeafOptions {
  /** DER SubjectPublicKeyInfo of the workload key (from the CSR). */
  spki: Uint8Array;
  /** The one URI SAN: the workload's SPIFFE ID. */
  spiffeId: string;
  ttlSeconds: number;
  now?: Date;
  /** Only when the CSR carried one and configuration allows it. */
  commonName?: string;
  /** Extra DNS names, for serving certificates (not workload SVIDs). */
  dnsNames?: string[];
  ipAddresses?: string[];
}

export interface Issued {
  der: Uint8Array;
  pem: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * A SPIFFE X.509-SVID: empty subject (unless a CN is allowed), one critical URI SAN,
 * CA:false, KU digitalSignature (+keyEncipherment for RSA keys; critical), EKU
 * serverAuth+clientAuth, SKI, notBefore now-2min, notAfter clamped to the signer's.
 */
export function issueLeaf(signer: Signer, opts: LeafOptions): Issued {
  const now = opts.now ?? new Date();
  const notBefore = new Date(now.getTime() - BACKDATE_MS);
  let notAfter = new Date(now.getTime() + opts.ttlSeconds * 1000);
  if (notAfter > signer.cert.notAfter) notAfter = signer.cert.notAfter;
  if (now >= signer.cert.notAfter)
    throw new IssueError(
      `signing CA ${formatName(signer.cert.subject)} expired at ${signer.cert.notAfter.toISOString()}: renew or replace it`,
    );
  if (notBefore < signer.cert.notBefore && notAfter <= signer.cert.notBefore)
    throw new IssueError("signing CA is not valid yet");
  const subject = opts.commonName !== undefined ? encodeName({ commonName: opts.commonName }) : seq();
  // With an empty subject the SAN carries the identity and must be critical (RFC 5280 4.2.1.6).
  const sanCritical = opts.commonName === undefined;
  const sans =
    opts.dnsNames?.length || opts.ipAddresses?.length
      ? encodeDnsSans(opts.dnsNames ?? [], opts.ipAddresses ?? [], [opts.spiffeId])
      : encodeUriSans([opts.spiffeId]);
  const extensions = seq(
    leafFixedExtensions(signer, isRsaSpki(opts.spki)),
    encodeExtension(OID.subjectKeyIdentifier, false, encodeSki(keyIdentifier(opts.spki))),
    encodeExtension(OID.subjectAltName, sanCritical, sans),
  );
  const tbs = seq(
    V3,
    unsignedInteger(randomSerial()),
    signer.scheme.algorithmIdentifier,
    signer.cert.subjectRaw,
    validity(notBefore, notAfter),
    subject,
    opts.spki,
    explicit(3, extensions),
  );
  const der = signTbs(signer, tbs);
  return { der, pem: encodePem("CERTIFICATE", der), notBefore, notAfter };
}

export interface CaOptions {
  subject: NameFields;
  /** Public or private key of the new CA. */
  key: KeyObject;
  ttlSeconds: number;
  now?: Date;
  pathLen?: number;
  /** SPIFFE trust-domain ID for the CA (no path), as SPIFFE signing certs may carry. */
  uris?: string[];
}

/** A CA certificate: self-signed root when `issuer` is omitted, otherwise an intermediate. */
export function issueCa(opts: CaOptions, issuer?: Signer): Issued {
  const spki = spkiDer(opts.key);
  const subject = encodeName(opts.subject);
  let scheme: SignatureScheme;
  let signingKey: KeyObject;
  if (issuer) {
    scheme = issuer.scheme;
    signingKey = issuer.key;
  } else {
    if (opts.key.type !== "private") throw new IssueError("a self-signed root needs the private key");
    scheme = signatureSchemeFor(describeKey(createPublicKey(opts.key)));
    signingKey = opts.key;
  }
  const ski = keyIdentifier(spki);
  return signCa({
    subject,
    spki,
    ski,
    aki: issuer ? issuer.keyId : ski,
    issuerName: issuer ? issuer.cert.subjectRaw : subject,
    notBefore: new Date((opts.now ?? new Date()).getTime() - BACKDATE_MS),
    ttlNotAfter: new Date((opts.now ?? new Date()).getTime() + opts.ttlSeconds * 1000),
    capNotAfter: issuer?.cert.notAfter,
    pathLen: opts.pathLen,
    uris: opts.uris,
    scheme,
    signingKey,
  });
}

/**
 * A cross-certificate: `ca`'s subject, key, key identifier, path length and URIs, certified
 * by `issuer` (another root), valid until the earlier of both. A peer trusting only `issuer`
 * then verifies anything under `ca` when the cross-certificate is sent in the chain.
 */
export function crossCertify(ca: Certificate, issuer: Signer, now = new Date()): Issued {
  if (!ca.isCa) throw new IssueError("only a CA certificate can be cross-certified");
  return signCa({
    subject: ca.subjectRaw,
    spki: ca.spki,
    ski: ca.subjectKeyId ?? keyIdentifier(ca.spki),
    aki: issuer.keyId,
    issuerName: issuer.cert.subjectRaw,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    ttlNotAfter: ca.notAfter,
    capNotAfter: issuer.cert.notAfter,
    pathLen: ca.pathLen,
    uris: ca.sans.uris,
    scheme: issuer.scheme,
    signingKey: issuer.key,
  });
}

function signCa(o: {
  subject: Uint8Array;
  spki: Uint8Array;
  ski: Uint8Array;
  aki: Uint8Array;
  issuerName: Uint8Array;
  notBefore: Date;
  ttlNotAfter: Date;
  capNotAfter: Date | undefined;
  pathLen: number | undefined;
  uris: readonly string[] | undefined;
  scheme: SignatureScheme;
  signingKey: KeyObject;
}): Issued {
  const notBefore = o.notBefore;
  const notAfter = o.capNotAfter && o.ttlNotAfter > o.capNotAfter ? o.capNotAfter : o.ttlNotAfter;
  const exts = [
    encodeExtension(OID.keyUsage, true, encodeKeyUsage(["digitalSignature", "keyCertSign", "cRLSign"])),
    encodeExtension(OID.basicConstraints, true, encodeBasicConstraints(true, o.pathLen)),
    encodeExtension(OID.subjectKeyIdentifier, false, encodeSki(o.ski)),
    encodeExtension(OID.authorityKeyIdentifier, false, encodeAki(o.aki)),
  ];
  if (o.uris?.length) exts.push(encodeExtension(OID.subjectAltName, false, encodeUriSans(o.uris)));
  const tbs = seq(
    explicit(0, smallInteger(2)),
    unsignedInteger(randomSerial()),
    o.scheme.algorithmIdentifier,
    o.issuerName,
    validity(notBefore, notAfter),
    o.subject,
    o.spki,
    explicit(3, seq(...exts)),
  );
  const der = seq(tbs, o.scheme.algorithmIdentifier, bitString(signWith(o.signingKey, o.scheme, tbs)));
  return { der, pem: encodePem("CERTIFICATE", der), notBefore, notAfter };
}

/** Convenience for callers that want the parsed form of what they just issued. */
export function parseIssued(issued: Issued): Certificate {
  return parseCertificateDer(issued.der);
}
