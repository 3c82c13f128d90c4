// PKCS#10 certificate signing requests (RFC 2986): strict parsing, self-signature
// check, and building CSRs for the agent and the intermediate-CA modes.
import type { KeyObject } from "node:crypto";
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
import { canonicalSpki, type CanonicalSpki } from "./spki.js";
import { importRequestKey, requestKeyAlgorithm } from "./spki-import.js";

/** Inputs larger than this are refused before parsing: no CSR needs more. */
export const MAX_CSR_BYTES = 64 * 1024;

export class CsrError extends Error {
  override name = "CsrError";
}

export interface Csr {
  der: Uint8Array;
  subject: NameAttribute[];
  commonName?: string;
  /** Canonical DER SubjectPublicKeyInfo re-encoded from the checked request fields (never the request's bytes). */
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
 * The attributes, read the way every parser must agree on: only extensionRequest, at most
 * once, with exactly one value. Vault's parser (Go) reads every extensionRequest attribute; a
 * second one, or a second value, could ask Vault for what our check never saw.
 */
function attributeExtensions(attrs: Node): Extension[] {
  let out: Extension[] | undefined;
  for (const attr of children(attrs)) {
    const parts = children(expectTag(attr, Tag.SEQUENCE, "Attribute"));
    if (parts.length !== 2) throw new CsrError("CSR attribute must be exactly a type and a set of values");
    const type = oidString(parts[0]!);
    if (type !== OID.extensionRequest)
      throw new CsrError(
        `CSR carries attribute ${type}; only extensionRequest (${OID.extensionRequest}) is accepted: remove it`,
      );
    if (out) throw new CsrError("CSR has two extensionRequest attributes: send exactly one");
    const values = children(expectTag(parts[1], Tag.SET, "extensionRequest values"));
    if (values.length !== 1)
      throw new CsrError(`CSR extensionRequest has ${values.length} values: send exactly one`);
    out = decodeExtensions(values[0]!, { strict: true });
  }
  return out ?? [];
}

/**
 * Signature AlgorithmIdentifier parameters: NULL or absent for RSA PKCS#1 v1.5 (RFC 4055 5),
 * absent for ECDSA (RFC 5758 3.2) and Ed25519 (RFC 8410 3).
 */
function signatureAlgorithmOf(node: Node | undefined): string {
  const parts = children(expectTag(node, Tag.SEQUENCE, "signatureAlgorithm"));
  if (parts.length === 0 || parts.length > 2) throw new CsrError("CSR signatureAlgorithm is malformed");
  const id = oidString(parts[0]!);
  const params = parts[1];
  if (params) {
    const rsa = id === OID.sha256WithRSA || id === OID.sha384WithRSA || id === OID.sha512WithRSA;
    if (!rsa || params.tag !== Tag.NULL || params.value.length !== 0)
      throw new CsrError(`CSR signatureAlgorithm ${id} has parameters it must not have`);
  }
  return id;
}

/**
 * What proves the requester holds the CSR's key: the signed CertificationRequestInfo, its
 * signature and the key. Plain data, so it can travel to an issuance worker with the leaf to
 * sign and be checked there (verifyCsr) in the same job.
 */
export interface CsrProof {
  signatureAlgorithm: string;
  /** DER CertificationRequestInfo, as signed. */
  signed: Uint8Array;
  signature: Uint8Array;
  spki: CanonicalSpki;
}

/**
 * A CSR whose structure and fields were checked (decodeCsr) but whose signature was not yet:
 * everything a policy decision needs, and the proof that verifyCsr checks before signing.
 */
export interface DecodedCsr extends Omit<Csr, "publicKey"> {
  proof: CsrProof;
}

/** Runs a CSR step, turning key and DER errors into a CsrError that names the CSR. */
function asCsrError<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (err instanceof CsrError) throw err;
    if (err instanceof KeyError) throw new CsrError(`CSR key: ${err.message}`);
    throw new CsrError(`malformed CSR: ${(err as Error).message}`);
  }
}

/**
 * Decodes a PKCS#10 CSR from PEM text or DER bytes and checks every field, without importing
 * the key or checking the signature (verifyCsr does that). Cheap: no public-key cryptography.
 */
export function decodeCsr(input: string | Uint8Array): DecodedCsr {
  const der = toDer(input);
  return asCsrError(() => {
    const top = children(expectTag(decodeOne(der), Tag.SEQUENCE, "CertificationRequest"));
    if (top.length !== 3) throw new DerError("CertificationRequest must have 3 parts");
    const info = expectTag(top[0], Tag.SEQUENCE, "CertificationRequestInfo");
    const sigAlg = signatureAlgorithmOf(top[1]);
    const sigBits = expectTag(top[2], Tag.BIT_STRING, "signature").value;
    if (sigBits.length < 1 || sigBits[0] !== 0) throw new CsrError("CSR signature must be whole bytes");
    const infoParts = children(info);
    // RFC 2986: version, subject, subjectPKInfo, attributes [0]; the attributes may be missing
    // in lenient encoders, anything else after them is not a CSR we can read one way only.
    if (infoParts.length < 3 || infoParts.length > 4)
      throw new CsrError(
        `CertificationRequestInfo has ${infoParts.length} elements, expected version, subject, key and attributes`,
      );
    const version = expectTag(infoParts[0], Tag.INTEGER, "version");
    if (version.value.length !== 1 || version.value[0] !== 0) throw new CsrError("CSR version must be 1 (0)");
    const subjectNode = expectTag(infoParts[1], Tag.SEQUENCE, "subject");
    const spkiNode = expectTag(infoParts[2], Tag.SEQUENCE, "subjectPublicKeyInfo");
    const attrs = infoParts[3];
    if (attrs && attrs.tag !== 0xa0)
      throw new CsrError(
        `CSR has an unexpected element (tag 0x${attrs.tag.toString(16)}) after its public key`,
      );
    const extensions = attrs ? attributeExtensions(attrs) : [];

    let spki: CanonicalSpki;
    try {
      spki = canonicalSpki(spkiNode);
    } catch (err) {
      throw new CsrError(`CSR public key: ${(err as Error).message}`);
    }
    const keyAlgorithm = requestKeyAlgorithm(spki);

    const subject = decodeName(subjectNode);
    const sans: SubjectAltNames = { uris: [], dnsNames: [], ipAddresses: [], emails: [], other: 0 };
    let requestsCa = false;
    for (const ext of extensions) {
      if (ext.oid === OID.subjectAltName) decodeSubjectAltNames(ext.value, sans);
      if (ext.oid === OID.basicConstraints) requestsCa = decodeBasicConstraints(ext.value).ca;
    }
    const csr: DecodedCsr = {
      der,
      subject,
      spki: spki.der,
      keyAlgorithm,
      extensions,
      sans,
      requestsCa,
      proof: { signatureAlgorithm: sigAlg, signed: info.raw, signature: sigBits.subarray(1), spki },
    };
    const cn = commonNameOf(subject);
    if (cn !== undefined) csr.commonName = cn;
    return csr;
  });
}

/** Imports the key of a decoded CSR and checks the CSR's signature with it: proof of possession. */
export function verifyCsrProof(proof: CsrProof): KeyObject {
  return asCsrError(() => {
    let publicKey: KeyObject;
    try {
      publicKey = importRequestKey(proof.spki).publicKey;
    } catch (err) {
      if (err instanceof KeyError) throw err;
      throw new CsrError("CSR public key cannot be decoded: use RSA 2048-4096, ECDSA P-256/P-384 or Ed25519");
    }
    if (!verifySignature(proof.signatureAlgorithm, publicKey, proof.signed, proof.signature))
      throw new CsrError(
        "CSR signature does not verify: the request was altered or not signed by its own key",
      );
    return publicKey;
  });
}

/** A decoded CSR whose signature verifies, as a Csr; a Csr as it is (already verified). */
export function verifyCsr(csr: Csr | DecodedCsr): Csr {
  if (!("proof" in csr)) return csr;
  const { proof, ...fields } = csr;
  return { ...fields, publicKey: verifyCsrProof(proof) };
}

/** Parses and verifies a PKCS#10 CSR from PEM text or DER bytes. */
export function parseCsr(input: string | Uint8Array): Csr {
  return verifyCsr(decodeCsr(input));
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
  const alg = describeKey(privateKey);
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
