// Hand-crafted hostile CSRs: every one is signed by its own key, so only the structure
// decides. Each must be refused with a reason, or (where the encoding is merely lenient)
// read one way and re-encoded canonically.
import "reflect-metadata";
import { test } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, type KeyObject } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { CsrError, parseCsr } from "../../src/pki/csr.js";
import {
  bitString,
  boolean,
  children,
  decodeOne,
  nullValue,
  octetString,
  oid,
  seq,
  set,
  smallInteger,
  tlv,
} from "../../src/pki/der.js";
import {
  encodeDnsSans,
  encodeExtension,
  encodeBasicConstraints,
  encodeUriSans,
} from "../../src/pki/extensions.js";
import {
  generateKeyPairFor,
  signatureSchemeFor,
  signWith,
  spkiDer,
  type KeyAlgorithm,
} from "../../src/pki/keys.js";
import { OID } from "../../src/pki/oids.js";
import { issueLeaf } from "../../src/pki/issue.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { makeTestCa } from "../helpers/pki-fixtures.js";

const ID = "spiffe://cluster.local/ns/default/sa/sleep";
const keys = new Map<KeyAlgorithm, KeyObject>();
const keyFor = (alg: KeyAlgorithm): KeyObject => {
  let k = keys.get(alg);
  if (!k) keys.set(alg, (k = generateKeyPairFor(alg).privateKey));
  return k;
};

const sanExt = (uris = [ID]): Uint8Array => encodeExtension(OID.subjectAltName, true, encodeUriSans(uris));
const evilExts = (): Uint8Array =>
  seq(
    encodeExtension(OID.basicConstraints, true, encodeBasicConstraints(true)),
    encodeExtension(OID.subjectAltName, false, encodeDnsSans(["evil.example.com"])),
  );
const extReq = (...values: Uint8Array[]): Uint8Array => seq(oid(OID.extensionRequest), set(...values));

interface Craft {
  alg?: KeyAlgorithm;
  /** Replaces the [0] attributes element's contents. */
  attributes?: Uint8Array[];
  /** Replaces the SPKI. */
  spki?: (real: Uint8Array) => Uint8Array;
  /** Appended to CertificationRequestInfo after the attributes. */
  infoTail?: Uint8Array[];
  /** Replaces the signature AlgorithmIdentifier. */
  sigAlg?: Uint8Array;
}

/** A CSR signed by its own key, with whatever structure the test asks for. */
function craft(c: Craft = {}): Uint8Array {
  const alg = c.alg ?? "ec-p256";
  const key = keyFor(alg);
  const realSpki = spkiDer(key);
  const attrs = tlv(0xa0, ...(c.attributes ?? [extReq(seq(sanExt()))]));
  const info = seq(
    smallInteger(0),
    seq(),
    c.spki ? c.spki(realSpki) : realSpki,
    attrs,
    ...(c.infoTail ?? []),
  );
  const scheme = signatureSchemeFor(alg);
  return seq(info, c.sigAlg ?? scheme.algorithmIdentifier, bitString(signWith(key, scheme, info)));
}

const refuses = (der: Uint8Array, re: RegExp): void =>
  assert.throws(
    () => parseCsr(der),
    (e: Error) => e instanceof CsrError && re.test(e.message),
    `expected CsrError matching ${re}`,
  );

/** Rebuilds an SPKI from its algorithm elements and key bits. */
const spkiOf = (algParts: Uint8Array[], keyBits: Uint8Array): Uint8Array =>
  seq(seq(...algParts), bitString(keyBits));
const keyBitsOf = (spki: Uint8Array): Uint8Array => children(decodeOne(spki))[1]!.value.subarray(1);

test("the well-formed craft is accepted (the harness itself is sound)", () => {
  for (const alg of ["ec-p256", "ec-p384", "rsa-2048", "ed25519"] as const) {
    const csr = parseCsr(craft({ alg }));
    assert.deepEqual(csr.sans.uris, [ID]);
    assert.equal(csr.keyAlgorithm, alg);
  }
});

test("two extensionRequest attributes: refused, whichever one hides CA:true and a DNS SAN", () => {
  refuses(
    craft({ attributes: [extReq(evilExts()), extReq(seq(sanExt()))] }),
    /two extensionRequest attributes/,
  );
  refuses(
    craft({ attributes: [extReq(seq(sanExt())), extReq(evilExts())] }),
    /two extensionRequest attributes/,
  );
});

test("two values in one extensionRequest: refused", () => {
  refuses(craft({ attributes: [extReq(evilExts(), seq(sanExt()))] }), /extensionRequest has 2 values/);
  refuses(craft({ attributes: [extReq()] }), /extensionRequest has 0 values/);
});

test("the same extension twice in one request: refused", () => {
  refuses(
    craft({
      attributes: [
        extReq(seq(sanExt(), encodeExtension(OID.subjectAltName, false, encodeDnsSans(["evil"])))),
      ],
    }),
    /extension 2\.5\.29\.17 appears twice/,
  );
});

test("attributes other than extensionRequest, and malformed attributes: refused", () => {
  const challengePassword = seq(oid("1.2.840.113549.1.9.7"), set(tlv(0x0c, Buffer.from("pw"))));
  refuses(
    craft({ attributes: [challengePassword, extReq(seq(sanExt()))] }),
    /attribute 1\.2\.840\.113549\.1\.9\.7/,
  );
  refuses(
    craft({ attributes: [seq(oid(OID.extensionRequest), set(seq(sanExt())), nullValue())] }),
    /exactly a type and a set of values/,
  );
});

test("unknown elements after the attributes, in the SPKI, in an extension or the signature algorithm: refused", () => {
  refuses(craft({ infoTail: [nullValue()] }), /5 elements/);
  refuses(craft({ infoTail: [tlv(0xa1, nullValue())] }), /5 elements/);
  refuses(
    craft({ spki: (s) => seq(...children(decodeOne(s)).map((n) => n.raw), nullValue()) }),
    /3 elements/,
  );
  refuses(
    craft({
      attributes: [
        extReq(
          seq(seq(oid(OID.subjectAltName), boolean(true), octetString(encodeUriSans([ID])), nullValue())),
        ),
      ],
    }),
    /Extension must be/,
  );
  refuses(craft({ sigAlg: seq(oid(OID.ecdsaSha256), nullValue()) }), /parameters it must not have/);
  // An explicit critical FALSE is not DER (DEFAULT values are omitted).
  refuses(
    craft({
      attributes: [
        extReq(seq(seq(oid(OID.subjectAltName), boolean(false), octetString(encodeUriSans([ID]))))),
      ],
    }),
    /critical must be omitted or TRUE/,
  );
  // basicConstraints with a stray element.
  refuses(
    craft({
      attributes: [
        extReq(seq(sanExt(), encodeExtension(OID.basicConstraints, true, seq(boolean(true), nullValue())))),
      ],
    }),
    /BasicConstraints has unexpected elements/,
  );
});

test("RSA SubjectPublicKeyInfo with 240 arbitrary parameter bytes: refused", () => {
  const junk = octetString(new Uint8Array(238).fill(0x41));
  refuses(
    craft({ alg: "rsa-2048", spki: (s) => spkiOf([oid(OID.rsaEncryption), junk], keyBitsOf(s)) }),
    /RSA key parameters must be NULL/,
  );
  refuses(
    craft({
      alg: "rsa-2048",
      spki: (s) => spkiOf([oid(OID.rsaEncryption), nullValue(), nullValue()], keyBitsOf(s)),
    }),
    /algorithm is malformed/,
  );
  // RSAPublicKey with a third INTEGER, or a trailing byte after it.
  refuses(
    craft({
      alg: "rsa-2048",
      spki: (s) => {
        const [n, e] = children(decodeOne(keyBitsOf(s)));
        return spkiOf([oid(OID.rsaEncryption), nullValue()], seq(n!.raw, e!.raw, smallInteger(1)));
      },
    }),
    /exactly modulus and exponent/,
  );
});

test("RSA SPKI without parameters is read as NULL and the certificate carries the canonical SPKI", () => {
  const der = craft({ alg: "rsa-2048", spki: (s) => spkiOf([oid(OID.rsaEncryption)], keyBitsOf(s)) });
  const csr = parseCsr(der);
  const canonical = spkiDer(keyFor("rsa-2048"));
  assert.deepEqual(Buffer.from(csr.spki), Buffer.from(canonical));
  const ca = makeTestCa("ec-p256");
  const leaf = parseCertificate(issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 60 }).pem);
  assert.deepEqual(Buffer.from(leaf.spki), Buffer.from(canonical));
  // The oracle reads the same key with NULL parameters.
  const oracle = new x509.X509Certificate(leaf.der);
  assert.deepEqual(Buffer.from(oracle.publicKey.rawData), Buffer.from(canonical));
});

test("the issued SPKI is a fresh encoding, not a view into the request", () => {
  const der = craft({ alg: "ec-p256" });
  const csr = parseCsr(der);
  assert.notEqual(csr.spki.buffer, der.buffer);
  assert.deepEqual(Buffer.from(csr.spki), Buffer.from(spkiDer(keyFor("ec-p256"))));
});

test("EC keys: explicit curve parameters, unknown curves, compressed points: refused", () => {
  const point = (s: Uint8Array): Uint8Array => keyBitsOf(s);
  refuses(
    craft({ spki: (s) => spkiOf([oid(OID.ecPublicKey), seq(smallInteger(1))], point(s)) }),
    /must name a curve/,
  );
  refuses(craft({ spki: (s) => spkiOf([oid(OID.ecPublicKey)], point(s)) }), /must name a curve/);
  refuses(
    craft({ spki: (s) => spkiOf([oid(OID.ecPublicKey), oid("1.3.132.0.10")], point(s)) }),
    /secp256k1 is unsupported/,
  );
  refuses(
    craft({ spki: (s) => spkiOf([oid(OID.ecPublicKey), oid(OID.p384)], point(s)) }),
    /uncompressed P-384 point/,
  );
  refuses(
    craft({
      spki: (s) => {
        const p = point(s);
        const compressed = Uint8Array.from([2 + (p[64]! & 1), ...p.subarray(1, 33)]);
        return spkiOf([oid(OID.ecPublicKey), oid(OID.p256)], compressed);
      },
    }),
    /uncompressed P-256 point/,
  );
});

test("Ed25519 with parameters, unknown key algorithms, partial-byte keys: refused", () => {
  refuses(
    craft({ alg: "ed25519", spki: (s) => spkiOf([oid(OID.ed25519), nullValue()], keyBitsOf(s)) }),
    /Ed25519 key parameters must be absent/,
  );
  refuses(
    craft({ alg: "ed25519", spki: (s) => spkiOf([oid("1.3.101.113")], keyBitsOf(s)) }),
    /1\.3\.101\.113 is unsupported/,
  );
  refuses(
    craft({
      spki: (s) => seq(seq(oid(OID.ecPublicKey), oid(OID.p256)), tlv(0x03, Uint8Array.of(1), keyBitsOf(s))),
    }),
    /0 unused bits/,
  );
});

test("@peculiar/x509 CSRs are read the same way (oracle)", async () => {
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
  const keysP = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const req = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: keysP,
    signingAlgorithm: alg,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: ID }], true)],
  });
  const csr = parseCsr(req.toString("pem"));
  assert.deepEqual(csr.sans.uris, [ID]);
  assert.deepEqual(Buffer.from(csr.spki), Buffer.from(req.publicKey.rawData));
  assert.ok(
    csr.publicKey.equals(
      createPublicKey({ key: Buffer.from(req.publicKey.rawData), format: "der", type: "spki" }),
    ),
  );
});

test("the hidden-first-attribute attack Vault's parser would read (CA:true + DNS SAN first, an empty one second): refused", () => {
  refuses(craft({ attributes: [extReq(evilExts()), extReq(seq())] }), /two extensionRequest attributes/);
});
