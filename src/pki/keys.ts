// Key types meshvault accepts or generates, and how each one signs.
import {
  createECDH,
  createPrivateKey,
  createPublicKey,
  generateKeyPair as generateKeyPairCb,
  generateKeyPairSync,
  sign as cryptoSign,
  verify as cryptoVerify,
  type KeyObject,
} from "node:crypto";
import { promisify } from "node:util";
import { bitString, bytesEqual, nullValue, octetString, oid, seq, smallInteger, tlv } from "./der.js";
import { OID } from "./oids.js";
import { encodePem } from "./pem.js";

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

/**
 * A new key pair, synchronously (CA keys, serving certificates: the agent uses generateKeyPairAsync).
 *
 * Never the KeyObjects `generateKeyPairSync` returns: on Node 20 (20.20.2 here) they share a
 * mutex with the key-generation job object, whose destructor takes that mutex when the garbage
 * collector frees the job, and a JWK export holds it while allocating. A collection during a JWK
 * export of such a key (spkiDer, privateKeyPem, jose's exportJWK) deadlocks the thread; a loop of
 * keygen + export hangs within a few thousand keys (test/pki/keygen.test.ts). The async path
 * frees its job at once and is not affected. EC keys are generated through ECDH and imported
 * from their JWK (~140 us); other types are re-imported from PKCS#8 DER (~0.6 ms, rare).
 */
export function generateKeyPairFor(alg: KeyAlgorithm): KeyPair {
  const [type, opts] = keygenArgs(alg);
  let privateKey: KeyObject;
  if (type === "ec") {
    const curve = opts["namedCurve"] as string;
    const crv = curve === "prime256v1" ? "P-256" : "P-384";
    const ecdh = createECDH(curve);
    const point = ecdh.generateKeys();
    const size = (point.length - 1) / 2;
    const scalar = ecdh.getPrivateKey();
    const d = Buffer.concat([Buffer.alloc(size - scalar.length), scalar]);
    const b64 = (b: Buffer): string => b.toString("base64url");
    privateKey = createPrivateKey({
      key: {
        kty: "EC",
        crv,
        d: b64(d),
        x: b64(point.subarray(1, 1 + size)),
        y: b64(point.subarray(1 + size)),
      },
      format: "jwk",
    });
  } else {
    const generated = generateKeyPairSync(type as "rsa", opts as { modulusLength: number }).privateKey;
    privateKey = createPrivateKey({
      key: generated.export({ type: "pkcs8", format: "der" }),
      format: "der",
      type: "pkcs8",
    });
  }
  return { privateKey, publicKey: createPublicKey(privateKey) };
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

/** An EC key's curve and point (and scalar, for a private key), read from its JWK. */
interface EcParts {
  curve: string;
  /** Uncompressed point: 04 || x || y. */
  point: Uint8Array;
  d?: Uint8Array;
}

// OpenSSL 3 encodes DER and PEM through its generic encoders (~150 us for an EC SPKI, ~100-140 us
// for a PKCS#8 private key, measured on every agent CSR and certificate); the JWK export gives
// the same numbers in ~10-15 us and the DER around them is fixed (RFC 5480, RFC 5915, RFC 5208).
// test/pki/spki-import.test.ts checks both routes give the same bytes.
function ecParts(key: KeyObject): EcParts | undefined {
  if (key.asymmetricKeyType !== "ec") return undefined;
  const jwk = key.export({ format: "jwk" });
  const ec = EC_JWK[jwk.crv as keyof typeof EC_JWK];
  if (!ec) return undefined;
  const x = Buffer.from(jwk.x ?? "", "base64url");
  const y = Buffer.from(jwk.y ?? "", "base64url");
  if (x.length !== ec.size || y.length !== ec.size) return undefined;
  const point = Buffer.concat([Buffer.of(4), x, y]);
  if (jwk.d === undefined) return { curve: ec.curve, point };
  const d = Buffer.from(jwk.d, "base64url");
  return d.length === ec.size ? { curve: ec.curve, point, d } : undefined;
}

const ecAlgorithmIdentifier = (curve: string): Uint8Array => seq(oid(OID.ecPublicKey), oid(curve));

export function spkiDer(key: KeyObject): Uint8Array {
  const ec = ecParts(key);
  if (ec) return seq(ecAlgorithmIdentifier(ec.curve), bitString(ec.point));
  const pub = key.type === "private" ? createPublicKey(key) : key;
  return new Uint8Array(pub.export({ type: "spki", format: "der" }));
}

/** True when `privateKey` is the private half of the public key `spki`. */
export function privateKeyMatches(privateKey: KeyObject, spki: Uint8Array): boolean {
  return bytesEqual(spkiDer(privateKey), spki);
}

/** PKCS#8 PEM ("PRIVATE KEY"), as OpenSSL writes it. */
export function privateKeyPem(key: KeyObject): string {
  const ec = key.type === "private" ? ecParts(key) : undefined;
  if (ec?.d) {
    // ECPrivateKey (RFC 5915) with the public key and without the curve, which the
    // AlgorithmIdentifier names: the form OpenSSL 3 writes inside PKCS#8.
    const inner = seq(smallInteger(1), octetString(ec.d), tlv(0xa1, bitString(ec.point)));
    return encodePem(
      "PRIVATE KEY",
      seq(smallInteger(0), ecAlgorithmIdentifier(ec.curve), octetString(inner)),
    );
  }
  return key.export({ type: "pkcs8", format: "pem" }).toString();
}
