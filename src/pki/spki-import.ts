// A request's checked public key (canonicalSpki) as a KeyObject, the cheapest way node:crypto
// offers, and its algorithm from the fields we already parsed. On every CSR's path: OpenSSL 3
// decodes a DER SPKI through its generic decoder (an EC SPKI cost ~26% of the server's CPU at
// 64 callers), while a JWK EC import or a PKCS#1 RSA import builds the key directly, and
// asymmetricKeyDetails would ask OpenSSL again for what the SPKI already says.
// test/pki/spki-import.test.ts checks both against createPublicKey(spki) + describeKey.
import { createPublicKey, type KeyObject } from "node:crypto";
import { children, decodeOne } from "./der.js";
import { rsaKeyAlgorithm, type KeyAlgorithm } from "./keys.js";
import type { CanonicalSpki } from "./spki.js";

export interface ImportedKey {
  publicKey: KeyObject;
  keyAlgorithm: KeyAlgorithm;
}

const JWK_CURVES = { "ec-p256": "P-256", "ec-p384": "P-384" } as const;

/** Bits in an RSA modulus (a positive, minimal DER INTEGER, as canonicalSpki checked). */
function modulusBits(rsaPublicKey: Uint8Array): number {
  const n = children(decodeOne(rsaPublicKey))[0]!.value;
  let i = 0;
  while (i < n.length - 1 && n[i] === 0) i++;
  return (n.length - i) * 8 - Math.clz32(n[i]!) + 24;
}

/**
 * Imports a checked request key. Throws (OpenSSL's error) when the key material itself is
 * bad, e.g. an EC point that is not on the curve; a KeyError for an RSA size we refuse.
 */
export function importRequestKey(spki: CanonicalSpki): ImportedKey {
  const keyAlgorithm = requestKeyAlgorithm(spki);
  switch (spki.kind) {
    case "ec-p256":
    case "ec-p384": {
      const half = (spki.key.length - 1) / 2;
      const b64 = (from: number): string =>
        Buffer.from(spki.key.buffer, spki.key.byteOffset + from, half).toString("base64url");
      const publicKey = createPublicKey({
        key: { kty: "EC", crv: JWK_CURVES[spki.kind], x: b64(1), y: b64(1 + half) },
        format: "jwk",
      });
      return { publicKey, keyAlgorithm };
    }
    case "rsa": {
      const publicKey = createPublicKey({ key: Buffer.from(spki.key), format: "der", type: "pkcs1" });
      return { publicKey, keyAlgorithm };
    }
    case "ed25519":
      return {
        publicKey: createPublicKey({ key: Buffer.from(spki.der), format: "der", type: "spki" }),
        keyAlgorithm,
      };
  }
}

/** A checked request key's algorithm, from its fields (no import); a KeyError for an RSA size we refuse. */
export function requestKeyAlgorithm(spki: CanonicalSpki): KeyAlgorithm {
  return spki.kind === "rsa" ? rsaKeyAlgorithm(modulusBits(spki.key)) : spki.kind;
}
