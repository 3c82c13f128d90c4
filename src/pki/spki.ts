// SubjectPublicKeyInfo from an untrusted request, read one way only: the structure is checked
// field by field and a canonical SPKI is re-encoded from the checked parts, so an issued
// certificate never carries bytes (odd parameters, trailing elements) copied from a request.
import {
  bitString,
  children,
  decodeOne,
  DerError,
  expectTag,
  nullValue,
  oid,
  oidString,
  seq,
  Tag,
  type Node,
} from "./der.js";
import { OID } from "./oids.js";

/** Key families a request may carry; sizes and curves are checked again by describeKey. */
export type SpkiKind = "rsa" | "ec-p256" | "ec-p384" | "ed25519";

export interface CanonicalSpki {
  kind: SpkiKind;
  /** DER SubjectPublicKeyInfo, freshly encoded from the checked fields. */
  der: Uint8Array;
  /** The subjectPublicKey bits (no unused-bits byte): PKCS#1 RSAPublicKey, EC point or raw Ed25519 key. */
  key: Uint8Array;
}

/** Uncompressed EC point lengths (0x04 || X || Y). Compressed points are refused: no mesh client sends them. */
const EC_POINT = { "ec-p256": 65, "ec-p384": 97 } as const;
const CURVES: Record<string, "ec-p256" | "ec-p384"> = { [OID.p256]: "ec-p256", [OID.p384]: "ec-p384" };
/** Names for curves people try, so the refusal says which one it was. */
const OTHER_CURVES: Record<string, string> = {
  "1.3.132.0.35": "secp521r1",
  "1.3.132.0.10": "secp256k1",
  "1.3.36.3.3.2.8.1.1.7": "brainpoolP256r1",
  "1.2.840.10045.3.1.1": "prime192v1",
  "1.3.132.0.33": "secp224r1",
};

function positiveMinimalInteger(node: Node | undefined, what: string): Uint8Array {
  const v = expectTag(node, Tag.INTEGER, what).value;
  if (v.length === 0) throw new DerError(`${what}: empty INTEGER`);
  if (v[0]! & 0x80) throw new DerError(`${what}: negative`);
  if (v.length > 1 && v[0] === 0 && !(v[1]! & 0x80)) throw new DerError(`${what}: non-minimal INTEGER`);
  return v;
}

/** RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017 A.1.1), nothing else. */
function checkRsaPublicKey(key: Uint8Array): void {
  const parts = children(expectTag(decodeOne(key), Tag.SEQUENCE, "RSAPublicKey"));
  if (parts.length !== 2) throw new DerError("RSAPublicKey must hold exactly modulus and exponent");
  positiveMinimalInteger(parts[0], "RSA modulus");
  const e = positiveMinimalInteger(parts[1], "RSA public exponent");
  if (!(e[e.length - 1]! & 1) || (e.length === 1 && e[0]! < 3))
    throw new DerError("RSA public exponent must be odd and at least 3");
}

/**
 * Checks a request's SPKI: RSA with NULL parameters (absent is read as NULL, RFC 4055 2.1),
 * EC with a named curve we support (P-256, P-384) and an uncompressed point, Ed25519 with
 * no parameters and 32 key bytes (RFC 8410 3); nothing after the key.
 */
export function canonicalSpki(spki: Node): CanonicalSpki {
  const parts = children(expectTag(spki, Tag.SEQUENCE, "subjectPublicKeyInfo"));
  if (parts.length !== 2)
    throw new DerError(`subjectPublicKeyInfo has ${parts.length} elements, expected algorithm and key`);
  const alg = children(expectTag(parts[0], Tag.SEQUENCE, "subjectPublicKeyInfo algorithm"));
  const bits = expectTag(parts[1], Tag.BIT_STRING, "subjectPublicKey").value;
  if (bits.length < 2 || bits[0] !== 0)
    throw new DerError("subjectPublicKey must be whole bytes (0 unused bits)");
  const key = bits.subarray(1);
  if (alg.length === 0 || alg.length > 2) throw new DerError("subjectPublicKeyInfo algorithm is malformed");
  const algOid = oidString(alg[0]!);
  const params = alg[1];
  switch (algOid) {
    case OID.rsaEncryption: {
      if (params && (params.tag !== Tag.NULL || params.value.length !== 0))
        throw new DerError("RSA key parameters must be NULL (RFC 3279 2.3.1)");
      checkRsaPublicKey(key);
      return { kind: "rsa", key, der: seq(seq(oid(OID.rsaEncryption), nullValue()), bitString(key)) };
    }
    case OID.ecPublicKey: {
      if (!params || params.tag !== Tag.OID)
        throw new DerError("EC key parameters must name a curve (RFC 5480 2.1.1: namedCurve only)");
      const curveOid = oidString(params);
      const kind = CURVES[curveOid];
      if (!kind)
        throw new DerError(
          `ECDSA curve ${OTHER_CURVES[curveOid] ?? curveOid} is unsupported: use P-256 or P-384`,
        );
      if (key.length !== EC_POINT[kind] || key[0] !== 0x04)
        throw new DerError(
          `EC public key must be an uncompressed ${kind === "ec-p256" ? "P-256" : "P-384"} point`,
        );
      return { kind, key, der: seq(seq(oid(OID.ecPublicKey), oid(curveOid)), bitString(key)) };
    }
    case OID.ed25519: {
      if (params) throw new DerError("Ed25519 key parameters must be absent (RFC 8410 3)");
      if (key.length !== 32) throw new DerError(`Ed25519 public key is ${key.length} bytes, expected 32`);
      return { kind: "ed25519", key, der: seq(seq(oid(OID.ed25519)), bitString(key)) };
    }
    default:
      throw new DerError(
        `public key algorithm ${algOid} is unsupported: use RSA 2048-4096, ECDSA P-256/P-384 or Ed25519`,
      );
  }
}
