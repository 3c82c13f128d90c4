// The fast request-key import (JWK for EC, PKCS#1 for RSA, sizes read from the SPKI) must
// give the same key and the same algorithm as the library path it replaced on the hot path:
// createPublicKey on the DER SPKI plus describeKey (asymmetricKeyDetails), the oracle here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { decodeOne } from "../../src/pki/der.js";
import {
  describeKey,
  generateKeyPairFor,
  KeyError,
  privateKeyPem,
  spkiDer,
  type KeyAlgorithm,
} from "../../src/pki/keys.js";
import { canonicalSpki } from "../../src/pki/spki.js";
import { importRequestKey } from "../../src/pki/spki-import.js";
import { buildCsr, parseCsr } from "../../src/pki/csr.js";

const spkiOf = (key: ReturnType<typeof createPublicKey>): Uint8Array =>
  new Uint8Array(key.export({ type: "spki", format: "der" }));

test("every accepted key type imports to the key and algorithm the library path gives", () => {
  const algs: KeyAlgorithm[] = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"];
  for (const alg of algs) {
    for (let i = 0; i < (alg.startsWith("rsa") ? 2 : 8); i++) {
      const { publicKey } = generateKeyPairFor(alg);
      const der = spkiOf(publicKey);
      const oracle = createPublicKey({ key: Buffer.from(der), format: "der", type: "spki" });
      const fast = importRequestKey(canonicalSpki(decodeOne(der)));
      assert.ok(fast.publicKey.equals(oracle), `${alg}: same key`);
      assert.equal(fast.keyAlgorithm, describeKey(oracle), `${alg}: same algorithm`);
      assert.deepEqual(spkiOf(fast.publicKey), der, `${alg}: exports the same SPKI`);
    }
  }
});

test("spkiDer (EC keys through their JWK) exports exactly what OpenSSL's SPKI encoder does", () => {
  const algs: KeyAlgorithm[] = ["ec-p256", "ec-p384", "rsa-2048", "ed25519"];
  for (const alg of algs)
    for (let i = 0; i < (alg.startsWith("ec") ? 64 : 2); i++) {
      const { publicKey, privateKey } = generateKeyPairFor(alg);
      assert.deepEqual(spkiDer(publicKey), spkiOf(publicKey), `${alg}: public key`);
      assert.deepEqual(spkiDer(privateKey), spkiOf(publicKey), `${alg}: from the private key`);
    }
});

test("privateKeyPem (EC keys through their JWK) writes exactly what OpenSSL's PKCS#8 encoder does", () => {
  const algs: KeyAlgorithm[] = ["ec-p256", "ec-p384", "rsa-2048", "ed25519"];
  let shortScalars = 0;
  for (const alg of algs)
    // Enough EC keys that some scalars start with a zero byte (1 in 256): they must stay full size.
    for (let i = 0; i < (alg.startsWith("ec") ? 1500 : 2); i++) {
      const { privateKey } = generateKeyPairFor(alg);
      const oracle = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
      assert.equal(privateKeyPem(privateKey), oracle, `${alg}: same PKCS#8 PEM`);
      if (alg.startsWith("ec") && Buffer.from(privateKey.export({ format: "jwk" }).d!, "base64url")[0] === 0)
        shortScalars++;
    }
  assert.ok(shortScalars > 0, "no EC scalar with a leading zero byte was drawn: draw more keys");
  // What we write reads back as the same key.
  const { privateKey } = generateKeyPairFor("ec-p256");
  assert.ok(createPrivateKey(privateKeyPem(privateKey)).equals(privateKey));
});

test("RSA sizes the library path refuses are refused with the same KeyError", () => {
  for (const bits of [1024, 2056]) {
    const { publicKey } = generateKeyPairSync("rsa", { modulusLength: bits });
    const der = spkiOf(publicKey);
    const oracle = createPublicKey({ key: Buffer.from(der), format: "der", type: "spki" });
    const expected = (() => {
      try {
        describeKey(oracle);
      } catch (err) {
        return err as KeyError;
      }
      assert.fail(`describeKey accepted ${bits} bits`);
    })();
    assert.throws(() => importRequestKey(canonicalSpki(decodeOne(der))), {
      name: "KeyError",
      message: expected.message,
    });
  }
});

test("an EC point that is not on the curve is refused, as the library path refuses it", () => {
  const { publicKey } = generateKeyPairFor("ec-p256");
  const der = spkiOf(publicKey);
  der[der.length - 1]! ^= 0x01; // move Y off the curve
  assert.throws(() => createPublicKey({ key: Buffer.from(der), format: "der", type: "spki" }));
  assert.throws(() => importRequestKey(canonicalSpki(decodeOne(der))));
});

test("parseCsr carries the imported key and algorithm (the 1024-bit refusal: test/pki/csr.test.ts)", () => {
  const csr = parseCsr(buildCsr(generateKeyPairFor("ec-p256").privateKey, {}));
  assert.equal(csr.keyAlgorithm, "ec-p256");
  assert.ok(
    csr.publicKey.equals(createPublicKey({ key: Buffer.from(csr.spki), format: "der", type: "spki" })),
  );
});
