// PKCS#10 certificate signing requests (RFC 2986): strict parsing, self-signature
// check, and building CSRs for the agent and the intermediate-CA modes.
import { createPublicKey, type KeyObject } from "node:crypto";
import {
  bitString,
  children,
  decodeOne,
  DerError,
  expectTag,
  oid,
  oidString,
  seq,
  set,
  smallInteger,
  Tag,
  tlv,
  type Node,
} from "./der.js";
import {
  decodeBasicConstraints,
  decodeExtensions,
  decodeSubjectAltNames,
  encodeBasicConstraints,
  encodeDnsSans,
  encodeExtension,
  encodeKeyUsage,
  type Extension,
  type SubjectAltNames,
} from "./extensions.js";
import {
  describeKey,
  KeyError,
  signatureSchemeFor,
  signWith,
  spkiDer,
  verifySignature,
  type KeyAlgorithm,
} from "./keys.js";
import { commonNameOf, decodeName, encodeName, type NameAttribute, type NameFields } from "./name.js";
import { OID } from "./oids.js";
import { decodePem, encodePem } from "./pem.js";

/** Inputs larger than this are refused before parsing: no CSR needs more. */
export const MAX_CSR_BYTES = 64 * 1024;

export class CsrError extends Error {
  override name = "CsrError";
}

export interface Csr {
  der: Uint8Array;
  subject: NameAttribute[];
  commonName?: string;
  spki: Uint8Array;
  publicKey: KeyObject;
  keyAlgorithm: KeyAlgorithm;
  extensions: Extension[];
  sans: SubjectAltNames;
  /** True when the CSR asks for basicConstraints CA:true. */
  requestsCa: boolean;
}

function toDer(input: string | Uint8Array): Uint8Array {
  if (input.length > MAX_CSR_BYTES)
    throw new CsrError(
      `CSR is ${input.length} bytes, over the ${MAX_CSR_BYTES}-byte limit: send a single PKCS#10 request`,
    );
  if (typeof input !== "string") return input;
  const trimmed = input.trim();
  if (!trimmed.startsWith("-----BEGIN"))
    throw new CsrError("CSR is not PEM: expected '-----BEGIN CERTIFICATE REQUEST-----'");
  const blocks = decodePem(trimmed);
  if (blocks.length !== 1) throw new CsrError(`CSR PEM must hold exactly one block, found ${blocks.length}`);
  const block = blocks[0]!;
  if (block.type !== "CERTIFICATE REQUEST" && block.type !== "NEW CERTIFICATE REQUEST")
    throw new CsrError(`CSR PEM block is '${block.type}', expected 'CERTIFICATE REQUEST'`);
  const end = trimmed.lastIndexOf("-----END");
  const after = trimmed.slice(trimmed.indexOf("-----", end + 8) + 5).trim();
  if (after.length > 0) throw new CsrError("trailing garbage after the CSR's PEM block");
  return block.der;
}

/**
 * SPKI DER to a KeyObject. RSA goes through its PKCS#1 form: OpenSSL 3 decodes an RSA SPKI
 * about 20x slower than the bare RSAPublicKey, and this is on every CSR's path.
 */
export function importSpki(spki: Node): KeyObject {
  const [algId, bits] = children(spki);
  const alg = oidString(children(expectTag(algId, Tag.SEQUENCE, "AlgorithmIdentifier"))[0]!);
  if (alg === OID.rsaEncryption) {
    const v = expectTag(bits, Tag.BIT_STRING, "subjectPublicKey").value;
    if (v[0] === 0) return createPublicKey({ key: Buffer.from(v.subarray(1)), format: "der", type: "pkcs1" });
  }
  return createPublicKey({ key: Buffer.from(spki.raw), format: "der", type: "spki" });
}

function attributeExtensions(attrs: Node): Extension[] {
  let out: Extension[] = [];
  for (const attr of children(attrs)) {
    const [typeNode, values] = children(expectTag(attr, Tag.SEQUENCE, "Attribute"));
    if (!typeNode || !values) throw new DerError("Attribute is incomplete");
    if (oidString(typeNode) !== OID.extensionRequest) continue;
    const first = children(expectTag(values, Tag.SET, "extensionRequest values"))[0];
    if (first) out = decodeExtensions(first);
  }
  return out;
}

/** Parses and verifies a PKCS#10 CSR from PEM text or DER bytes. */
export function parseCsr(input: string | Uint8Array): Csr {
  const der = toDer(input);
  try {
    const top = children(expectTag(decodeOne(der), Tag.SEQUENCE, "CertificationRequest"));
    if (top.length !== 3) throw new DerError("CertificationRequest must have 3 parts");
    const info = expectTag(top[0], Tag.SEQUENCE, "CertificationRequestInfo");
    const sigAlg = oidString(children(expectTag(top[1], Tag.SEQUENCE, "signatureAlgorithm"))[0]!);
    const sigBits = expectTag(top[2], Tag.BIT_STRING, "signature").value;
    const infoParts = children(info);
    const version = expectTag(infoParts[0], Tag.INTEGER, "version");
    if (version.value.length !== 1 || version.value[0] !== 0) throw new CsrError("CSR version must be 1 (0)");
    const subjectNode = expectTag(infoParts[1], Tag.SEQUENCE, "subject");
    const spkiNode = expectTag(infoParts[2], Tag.SEQUENCE, "subjectPublicKeyInfo");
    const attrs = infoParts[3];
    const extensions = attrs && attrs.tag === 0xa0 ? attributeExtensions(attrs) : [];

    let publicKey: KeyObject;
    try {
      publicKey = importSpki(spkiNode);
    } catch {
      throw new CsrError("CSR public key cannot be decoded: use RSA 2048-4096, ECDSA P-256/P-384 or Ed25519");
    }
    const keyAlgorithm = describeKey(publicKey);
    if (!verifySignature(sigAlg, publicKey, info.raw, sigBits.subarray(1)))
      throw new CsrError(
        "CSR signature does not verify: the request was altered or not signed by its own key",
      );

    const subject = decodeName(subjectNode);
    const sans: SubjectAltNames = { uris: [], dnsNames: [], ipAddresses: [], emails: [], other: 0 };
    let requestsCa = false;
    for (const ext of extensions) {
      if (ext.oid === OID.subjectAltName) decodeSubjectAltNames(ext.value, sans);
      if (ext.oid === OID.basicConstraints) requestsCa = decodeBasicConstraints(ext.value).ca;
    }
    const csr: Csr = {
      der,
      subject,
      spki: spkiNode.raw,
      publicKey,
      keyAlgorithm,
      extensions,
      sans,
      requestsCa,
    };
    const cn = commonNameOf(subject);
    if (cn !== undefined) csr.commonName = cn;
    return csr;
  } catch (err) {
    if (err instanceof CsrError) throw err;
    if (err instanceof KeyError) throw new CsrError(`CSR key: ${err.message}`);
    throw new CsrError(`malformed CSR: ${(err as Error).message}`);
  }
}

export interface CsrTemplate {
  subject?: NameFields;
  uris?: string[];
  dnsNames?: string[];
  /** Ask for a CA certificate (intermediate mode). */
  ca?: boolean;
}

/** Builds a CSR signed by `privateKey`; returns PEM. */
export function buildCsr(privateKey: KeyObject, template: CsrTemplate): string {
  const alg = describeKey(createPublicKey(privateKey));
  const exts: Uint8Array[] = [];
  const uris = template.uris ?? [];
  const dns = template.dnsNames ?? [];
  if (uris.length || dns.length)
    exts.push(encodeExtension(OID.subjectAltName, false, encodeDnsSans(dns, [], uris)));
  if (template.ca) {
    exts.push(encodeExtension(OID.basicConstraints, true, encodeBasicConstraints(true)));
    exts.push(encodeExtension(OID.keyUsage, true, encodeKeyUsage(["keyCertSign", "cRLSign"])));
  }
  const attrs = exts.length ? explicitSet(seq(oid(OID.extensionRequest), set(seq(...exts)))) : explicitSet();
  const info = seq(smallInteger(0), encodeName(template.subject ?? {}), spkiDer(privateKey), attrs);
  const scheme = signatureSchemeFor(alg);
  const der = seq(info, scheme.algorithmIdentifier, bitString(signWith(privateKey, scheme, info)));
  return encodePem("CERTIFICATE REQUEST", der);
}

// attributes [0] IMPLICIT SET OF Attribute
function explicitSet(...items: Uint8Array[]): Uint8Array {
  return tlv(0xa0, ...items);
}
