// X.509 certificate parsing: the fields meshvault reasons about, straight from DER.
import { createHash, createPublicKey, type KeyObject } from "node:crypto";
import {
  bytesEqual,
  children,
  decodeOne,
  DerError,
  expectTag,
  oidString,
  parseTime,
  Tag,
  type Node,
} from "./der.js";
import {
  decodeBasicConstraints,
  decodeExtensions,
  decodeExtKeyUsage,
  decodeKeyIdentifier,
  decodeKeyUsage,
  decodeSubjectAltNames,
  type Extension,
  type KeyUsageName,
  type SubjectAltNames,
} from "./extensions.js";
import { decodeName, formatName, type NameAttribute } from "./name.js";
import { OID } from "./oids.js";
import { decodePem, encodePem, PemError } from "./pem.js";

export class CertificateError extends Error {
  override name = "CertificateError";
}

export interface Certificate {
  der: Uint8Array;
  pem: string;
  tbs: Uint8Array;
  signatureAlgorithm: string;
  signature: Uint8Array;
  serialHex: string;
  issuerRaw: Uint8Array;
  subjectRaw: Uint8Array;
  issuer: NameAttribute[];
  subject: NameAttribute[];
  notBefore: Date;
  notAfter: Date;
  spki: Uint8Array;
  publicKey: KeyObject;
  extensions: Extension[];
  isCa: boolean;
  pathLen?: number;
  keyUsage?: KeyUsageName[];
  extKeyUsage?: string[];
  sans: SubjectAltNames;
  subjectKeyId?: Uint8Array;
  authorityKeyId?: Uint8Array;
}

function bitStringBytes(node: Node, what: string): Uint8Array {
  const v = expectTag(node, Tag.BIT_STRING, what).value;
  if (v[0] !== 0) throw new DerError(`${what}: unused bits in a key or signature`);
  return v.subarray(1);
}

export function parseCertificateDer(der: Uint8Array): Certificate {
  try {
    const top = children(expectTag(decodeOne(der), Tag.SEQUENCE, "Certificate"));
    const tbsNode = expectTag(top[0], Tag.SEQUENCE, "TBSCertificate");
    const signatureAlgorithm = oidString(children(expectTag(top[1], Tag.SEQUENCE, "signatureAlgorithm"))[0]!);
    const signature = bitStringBytes(top[2]!, "signature");
    const tbs = children(tbsNode);
    let i = 0;
    if (tbs[0]?.tag === 0xa0) i++; // version; v1 certificates omit it
    const serial = expectTag(tbs[i++], Tag.INTEGER, "serialNumber");
    i++; // inner signature AlgorithmIdentifier
    const issuerNode = expectTag(tbs[i++], Tag.SEQUENCE, "issuer");
    const validity = children(expectTag(tbs[i++], Tag.SEQUENCE, "validity"));
    const subjectNode = expectTag(tbs[i++], Tag.SEQUENCE, "subject");
    const spkiNode = expectTag(tbs[i++], Tag.SEQUENCE, "subjectPublicKeyInfo");
    let extensions: Extension[] = [];
    for (; i < tbs.length; i++) {
      const n = tbs[i]!;
      if (n.tag === 0xa3) extensions = decodeExtensions(decodeOne(n.value));
    }
    // The key is imported when first used (a chain check uses its CA's; an agent compares the
    // leaf's SPKI bytes and never needs the leaf's): OpenSSL's DER SPKI import is the most
    // expensive step of parsing a certificate.
    const spki = spkiNode.raw;
    let publicKey: KeyObject | undefined;
    const cert: Certificate = {
      der,
      pem: encodePem("CERTIFICATE", der),
      tbs: tbsNode.raw,
      signatureAlgorithm,
      signature,
      serialHex: Buffer.from(serial.value)
        .toString("hex")
        .replace(/^(00)+(?=.)/, ""),
      issuerRaw: issuerNode.raw,
      subjectRaw: subjectNode.raw,
      issuer: decodeName(issuerNode),
      subject: decodeName(subjectNode),
      notBefore: parseTime(validity[0]!),
      notAfter: parseTime(validity[1]!),
      spki,
      get publicKey(): KeyObject {
        return (publicKey ??= createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" }));
      },
      extensions,
      isCa: false,
      sans: { uris: [], dnsNames: [], ipAddresses: [], emails: [], other: 0 },
    };
    for (const ext of extensions) {
      switch (ext.oid) {
        case OID.basicConstraints: {
          const bc = decodeBasicConstraints(ext.value);
          cert.isCa = bc.ca;
          if (bc.pathLen !== undefined) cert.pathLen = bc.pathLen;
          break;
        }
        case OID.keyUsage:
          cert.keyUsage = decodeKeyUsage(ext.value);
          break;
        case OID.extKeyUsage:
          cert.extKeyUsage = decodeExtKeyUsage(ext.value);
          break;
        case OID.subjectAltName:
          decodeSubjectAltNames(ext.value, cert.sans);
          break;
        case OID.subjectKeyIdentifier:
          cert.subjectKeyId = decodeKeyIdentifier(ext.value, false);
          break;
        case OID.authorityKeyIdentifier:
          cert.authorityKeyId = decodeKeyIdentifier(ext.value, true);
          break;
      }
    }
    return cert;
  } catch (err) {
    if (err instanceof CertificateError) throw err;
    throw new CertificateError(`invalid certificate: ${(err as Error).message}`);
  }
}

/** Parses every CERTIFICATE block of a PEM bundle, in order; errors when there is none. */
export function parseCertificates(pem: string, what = "certificate bundle"): Certificate[] {
  let blocks;
  try {
    blocks = decodePem(pem).filter((b) => b.type === "CERTIFICATE");
  } catch (err) {
    throw new CertificateError(`${what}: ${(err as PemError).message}`);
  }
  if (blocks.length === 0) throw new CertificateError(`${what}: no PEM CERTIFICATE block found`);
  return blocks.map((b, idx) => {
    try {
      return parseCertificateDer(b.der);
    } catch (err) {
      throw new CertificateError(`${what}, certificate #${idx + 1}: ${(err as Error).message}`);
    }
  });
}

export function parseCertificate(pem: string, what = "certificate"): Certificate {
  return parseCertificates(pem, what)[0]!;
}

/** RFC 5280 method 1 key identifier: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spki: Uint8Array): Uint8Array {
  const parts = children(decodeOne(spki));
  const bits = expectTag(parts[1], Tag.BIT_STRING, "subjectPublicKey").value.subarray(1);
  return new Uint8Array(createHash("sha1").update(bits).digest());
}

export function describeCertificate(cert: Certificate): string {
  const id = cert.sans.uris[0] ?? formatName(cert.subject);
  return `${id} (serial ${cert.serialHex}, issuer ${formatName(cert.issuer)})`;
}

/**
 * Issuer and subject are the same name (self-issued, RFC 5280 3.3): how meshvault tells a root
 * in a bundle or chain from the intermediates next to it.
 */
export function isSelfSigned(c: Pick<Certificate, "issuerRaw" | "subjectRaw">): boolean {
  return bytesEqual(c.issuerRaw, c.subjectRaw);
}
