// Key types meshvault accepts or generates, and how each one signs.
import {
  createPublicKey,
  generateKeyPair as generateKeyPairCb,
  generateKeyPairSync,
  sign as cryptoSign,
  verify as cryptoVerify,
  type KeyObject,
} from "node:crypto";
import { promisify } from "node:util";
import { bitString, bytesEqual, nullValue, oid, seq } from "./der.js";
import { OID } from "./oids.js";

export type KeyAlgorithm = "ec-p256" | "ec-p384" | "rsa-2048" | "rsa-3072" | "rsa-4096" | "ed25519";
export const KEY_ALGORITHMS: readonly KeyAlgorithm[] = [
  "ec-p256",
  "ec-p384",
  "rsa-2048",
  "rsa-3072",
  "rsa-4096",
  "ed25519",
];

export class KeyError extends Error {
  override name = "KeyError";
}

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

function keygenArgs(alg: KeyAlgorithm): ["ec" | "rsa" | "ed25519", Record<string, unknown>] {
  switch (alg) {
    case "ec-p256":
      return ["ec", { namedCurve: "prime256v1" }];
    case "ec-p384":
      return ["ec", { namedCurve: "secp384r1" }];
    case "rsa-2048":
      return ["rsa", { modulusLength: 2048 }];
    case "rsa-3072":
      return ["rsa", { modulusLength: 3072 }];
    case "rsa-4096":
      return ["rsa", { modulusLength: 4096 }];
    case "ed25519":
      return ["ed25519", {}];
  }
}

export function generateKeyPairFor(alg: KeyAlgorithm): KeyPair {
  const [type, opts] = keygenArgs(alg);
  return generateKeyPairSync(type as "ec", opts as { namedCurve: string });
}

const generateAsync = promisify(generateKeyPairCb);
/** Off the event loop: RSA generation takes tens of milliseconds. */
export async function generateKeyPairAsync(alg: KeyAlgorithm): Promise<KeyPair> {
  const [type, opts] = keygenArgs(alg);
  return (await generateAsync(type as "ec", opts as { namedCurve: string })) as KeyPair;
}

/** An RSA key's algorithm by modulus size; throws a KeyError for sizes we do not accept. */
export function rsaKeyAlgorithm(bits: number): KeyAlgorithm {
  if (bits < 2048) throw new KeyError(`RSA key of ${bits} bits is too small: use at least 2048 bits`);
  if (bits > 4096) throw new KeyError(`RSA key of ${bits} bits is too large: use at most 4096 bits`);
  if (bits === 2048) return "rsa-2048";
  if (bits === 3072) return "rsa-3072";
  if (bits === 4096) return "rsa-4096";
  throw new KeyError(`RSA key of ${bits} bits is unsupported: use 2048, 3072 or 4096 bits`);
}

/** Classifies a public key; throws a KeyError naming what is wrong for unsupported keys. */
export function describeKey(key: KeyObject): KeyAlgorithm {
  const t = key.asymmetricKeyType;
  const d = key.asymmetricKeyDetails ?? {};
  if (t === "rsa") return rsaKeyAlgorithm(d.modulusLength ?? 0);
  if (t === "ec") {
    if (d.namedCurve === "prime256v1") return "ec-p256";
    if (d.namedCurve === "secp384r1") return "ec-p384";
    throw new KeyError(`ECDSA curve ${d.namedCurve ?? "(unknown)"} is unsupported: use P-256 or P-384`);
  }
  if (t === "ed25519") return "ed25519";
  throw new KeyError(
    `${t ?? "unknown"} keys are unsupported: use RSA 2048-4096, ECDSA P-256/P-384 or Ed25519`,
  );
}

/** How a CA key of this type signs: AlgorithmIdentifier DER and the digest name for node:crypto. */
export interface SignatureScheme {
  algorithmIdentifier: Uint8Array;
  hash: string | null;
}

const schemes: Record<KeyAlgorithm, SignatureScheme> = {
  "ec-p256": { algorithmIdentifier: seq(oid(OID.ecdsaSha256)), hash: "sha256" },
  "ec-p384": { algorithmIdentifier: seq(oid(OID.ecdsaSha384)), hash: "sha384" },
  "rsa-2048": { algorithmIdentifier: seq(oid(OID.sha256WithRSA), nullValue()), hash: "sha256" },
  "rsa-3072": { algorithmIdentifier: seq(oid(OID.sha256WithRSA), nullValue()), hash: "sha256" },
  "rsa-4096": { algorithmIdentifier: seq(oid(OID.sha256WithRSA), nullValue()), hash: "sha256" },
  ed25519: { algorithmIdentifier: seq(oid(OID.ed25519)), hash: null },
};

export function signatureSchemeFor(alg: KeyAlgorithm): SignatureScheme {
  return schemes[alg];
}

export function signWith(key: KeyObject, scheme: SignatureScheme, data: Uint8Array): Uint8Array {
  return new Uint8Array(cryptoSign(scheme.hash, data, key));
}

/** Digest for a signature algorithm OID, or an error naming the algorithm when unsupported. */
export function hashForSignatureOid(sigOid: string): {
  hash: string | null;
  keyType: "rsa" | "ec" | "ed25519";
} {
  switch (sigOid) {
    case OID.sha256WithRSA:
      return { hash: "sha256", keyType: "rsa" };
    case OID.sha384WithRSA:
      return { hash: "sha384", keyType: "rsa" };
    case OID.sha512WithRSA:
      return { hash: "sha512", keyType: "rsa" };
    case OID.ecdsaSha256:
      return { hash: "sha256", keyType: "ec" };
    case OID.ecdsaSha384:
      return { hash: "sha384", keyType: "ec" };
    case OID.ecdsaSha512:
      return { hash: "sha512", keyType: "ec" };
    case OID.ed25519:
      return { hash: null, keyType: "ed25519" };
    case OID.rsaPss:
      throw new KeyError(
        "RSASSA-PSS signatures are unsupported: sign with PKCS#1 v1.5 (sha256WithRSAEncryption)",
      );
    default:
      throw new KeyError(
        `signature algorithm ${sigOid} is unsupported: use SHA-256/384/512 with RSA or ECDSA, or Ed25519`,
      );
  }
}

export function verifySignature(
  sigOid: string,
  key: KeyObject,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  const { hash, keyType } = hashForSignatureOid(sigOid);
  if (key.asymmetricKeyType !== keyType)
    throw new KeyError(`signature algorithm ${sigOid} does not match the ${key.asymmetricKeyType} key`);
  try {
    return cryptoVerify(hash, data, key, signature);
  } catch {
    return false;
  }
}

const EC_JWK = { "P-256": { curve: OID.p256, size: 32 }, "P-384": { curve: OID.p384, size: 48 } } as const;

export function spkiDer(key: KeyObject): Uint8Array {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  // OpenSSL 3 encodes a DER SPKI through its generic encoder (~150 us for an EC key, on every
  // agent CSR); the JWK export gives the same point in ~7 us and the SPKI around it is fixed
  // (RFC 5480). test/pki/spki-import.test.ts checks both give the same bytes.
  if (pub.asymmetricKeyType === "ec") {
    const jwk = pub.export({ format: "jwk" });
    const ec = EC_JWK[jwk.crv as keyof typeof EC_JWK];
    const x = Buffer.from(jwk.x ?? "", "base64url");
    const y = Buffer.from(jwk.y ?? "", "base64url");
    if (ec && x.length === ec.size && y.length === ec.size)
      return seq(seq(oid(OID.ecPublicKey), oid(ec.curve)), bitString(Buffer.concat([Buffer.of(4), x, y])));
  }
  return new Uint8Array(pub.export({ type: "spki", format: "der" }));
}

/** True when `privateKey` is the private half of the public key `spki`. */
export function privateKeyMatches(privateKey: KeyObject, spki: Uint8Array): boolean {
  return bytesEqual(spkiDer(privateKey), spki);
}

export function privateKeyPem(key: KeyObject): string {
  return key.export({ type: "pkcs8", format: "pem" }).toString();
}
