// generateKeyPairFor's keys must survive what the rest of src/pki does with them. On Node 20 a
// key straight from generateKeyPairSync deadlocks its thread when a garbage collection frees the
// key-generation job during a JWK export of that key (see generateKeyPairFor); a loop of keygen
// and JWK exports hangs within a few thousand keys. The loop runs in a child process with a
// deadline, because a deadlocked thread cannot report anything itself.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createPrivateKey, createPublicKey, sign, verify } from "node:crypto";
import { generateKeyPairFor, KEY_ALGORITHMS, privateKeyPem, spkiDer } from "../../src/pki/keys.js";

const DEADLINE_MS = 120_000;
const keysUrl = new URL("../../src/pki/keys.ts", import.meta.url).href;

test("keys from generateKeyPairFor are exported as JWK thousands of times without hanging", () => {
  const script = `
    const { generateKeyPairFor, privateKeyPem, spkiDer } = await import(${JSON.stringify(keysUrl)});
    let n = 0;
    for (const [alg, count] of [["ec-p256", 6000], ["ec-p384", 1000], ["ed25519", 1000], ["rsa-2048", 4]]) {
      for (let i = 0; i < count; i++) {
        const { privateKey, publicKey } = generateKeyPairFor(alg);
        privateKey.export({ format: "jwk" });
        publicKey.export({ format: "jwk" });
        spkiDer(privateKey);
        privateKeyPem(privateKey);
        n++;
      }
    }
    console.log("exported " + n);
  `;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: DEADLINE_MS,
  });
  assert.equal(
    r.signal,
    null,
    `the keygen + export loop did not finish in ${DEADLINE_MS / 1000} s (deadlocked?): ${r.stderr}`,
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /exported 8004/);
});

test("every algorithm gives a working pair: the private key signs, the public key verifies, both re-import", () => {
  for (const alg of KEY_ALGORITHMS) {
    const { privateKey, publicKey } = generateKeyPairFor(alg);
    const data = Buffer.from(`signed by ${alg}`);
    const hash = alg === "ed25519" ? null : "sha256";
    assert.ok(verify(hash, data, publicKey, sign(hash, data, privateKey)), `${alg}: signs and verifies`);
    assert.ok(createPublicKey(privateKey).equals(publicKey), `${alg}: public half of the private key`);
    assert.ok(createPrivateKey(privateKeyPem(privateKey)).equals(privateKey), `${alg}: PEM round trip`);
    assert.deepEqual(
      spkiDer(publicKey),
      new Uint8Array(publicKey.export({ type: "spki", format: "der" })),
      `${alg}: SPKI`,
    );
  }
  const details = generateKeyPairFor("ec-p384").privateKey.asymmetricKeyDetails;
  assert.equal(details?.namedCurve, "secp384r1");
  assert.equal(generateKeyPairFor("rsa-3072").privateKey.asymmetricKeyDetails?.modulusLength, 3072);
});
