import { test } from "node:test";
import assert from "node:assert/strict";
import { buildCsr, CsrError, decodeCsr, MAX_CSR_BYTES, parseCsr, verifyCsr } from "../../src/pki/csr.js";
import { decodePem, encodePem } from "../../src/pki/pem.js";
import { createPublicKey } from "node:crypto";
import { generateKeyPairFor } from "../../src/pki/keys.js";
import { opensslCsr, openssl } from "../helpers/openssl.js";

const rejects = (input: string | Uint8Array, re: RegExp): void => {
  assert.throws(
    () => parseCsr(input),
    (e: Error) => e instanceof CsrError && re.test(e.message),
    `expected ${re}`,
  );
};

test("accepts openssl CSRs: RSA 2048/3072/4096, ECDSA P-256/P-384, Ed25519", () => {
  const cases: [string[], string][] = [
    [["-newkey", "rsa:2048"], "rsa-2048"],
    [["-newkey", "rsa:3072"], "rsa-3072"],
    [["-newkey", "rsa:4096"], "rsa-4096"],
    [["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "ec-p256"],
    [["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], "ec-p384"],
    [["-newkey", "ed25519"], "ed25519"],
  ];
  for (const [args, alg] of cases) {
    const { csrPem } = opensslCsr(args, "/O=", ["-addext", "subjectAltName=URI:spiffe://td/ns/a/sa/b"]);
    const csr = parseCsr(csrPem);
    assert.equal(csr.keyAlgorithm, alg);
    assert.deepEqual(csr.sans.uris, ["spiffe://td/ns/a/sa/b"]);
    assert.equal(csr.commonName, undefined);
    // DER input too.
    assert.equal(parseCsr(decodePem(csrPem)[0]!.der).keyAlgorithm, alg);
  }
});

test("reads CN, DNS/IP/email SANs and CA:true requests", () => {
  const { csrPem } = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "/CN=web", [
    "-addext",
    "subjectAltName=DNS:web.example,IP:10.0.0.1,email:a@b.c",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
  ]);
  const csr = parseCsr(csrPem);
  assert.equal(csr.commonName, "web");
  assert.deepEqual(csr.sans.dnsNames, ["web.example"]);
  assert.deepEqual(csr.sans.ipAddresses, ["10.0.0.1"]);
  assert.deepEqual(csr.sans.emails, ["a@b.c"]);
  assert.equal(csr.requestsCa, true);
});

test("rejects RSA < 2048 and unsupported curves", () => {
  rejects(opensslCsr(["-newkey", "rsa:1024"]).csrPem, /1024 bits is too small/);
  rejects(
    opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"]).csrPem,
    /secp521r1 is unsupported/,
  );
  rejects(
    opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"]).csrPem,
    /secp256k1 is unsupported/,
  );
});

test("rejects a tampered CSR: bad signature", () => {
  const { csrPem } = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "/CN=aaaa");
  const der = decodePem(csrPem)[0]!.der.slice();
  const at = Buffer.from(der).indexOf(Buffer.from("aaaa"));
  der[at] = "b".charCodeAt(0);
  rejects(der, /signature does not verify/);
  rejects(encodePem("CERTIFICATE REQUEST", der), /signature does not verify/);
});

test("decodeCsr reads every field without the signature; verifyCsr then gives what parseCsr gives", () => {
  for (const alg of ["ec-p256", "ec-p384", "rsa-2048", "ed25519"] as const) {
    const pem = buildCsr(generateKeyPairFor(alg).privateKey, { uris: ["spiffe://td/ns/a/sa/b"] });
    const decoded = decodeCsr(pem);
    const parsed = parseCsr(pem);
    assert.equal(decoded.keyAlgorithm, parsed.keyAlgorithm);
    assert.deepEqual(decoded.spki, parsed.spki);
    assert.deepEqual(decoded.sans, parsed.sans);
    const verified = verifyCsr(decoded);
    assert.ok(verified.publicKey.equals(parsed.publicKey));
    assert.equal("proof" in verified, false);
    assert.equal(verifyCsr(parsed), parsed, "an already verified CSR is returned as is");
  }
  // A bad signature decodes (the policy can look at it) but never verifies.
  const der = decodePem(buildCsr(generateKeyPairFor("ec-p256").privateKey, {}))[0]!.der;
  der[der.length - 1]! ^= 1;
  const decoded = decodeCsr(der);
  assert.throws(
    () => verifyCsr(decoded),
    (e: Error) => e instanceof CsrError && /signature does not verify/.test(e.message),
  );
  // Key-size refusals happen while decoding, before any signature work.
  assert.throws(() => decodeCsr(opensslCsr(["-newkey", "rsa:1024"]).csrPem), /1024 bits is too small/);
});

test("rejects trailing garbage, oversize input, wrong PEM type, junk", () => {
  const { csrPem } = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
  const der = decodePem(csrPem)[0]!.der;
  rejects(Uint8Array.from([...der, 0, 1]), /trailing garbage/);
  rejects(csrPem + "garbage", /trailing garbage/);
  rejects(csrPem + csrPem, /exactly one block/);
  rejects("x".repeat(MAX_CSR_BYTES + 1), /over the 65536-byte limit/);
  rejects(csrPem.replaceAll("CERTIFICATE REQUEST", "CERTIFICATE"), /expected 'CERTIFICATE REQUEST'/);
  rejects("hello", /not PEM/);
  rejects(Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x00), /malformed CSR/);
  rejects(encodePem("CERTIFICATE REQUEST", Uint8Array.of(1, 2, 3)), /malformed CSR/);
});

test("buildCsr output is accepted by openssl and by our parser", () => {
  for (const alg of ["ec-p256", "rsa-2048", "ed25519"] as const) {
    const { privateKey } = generateKeyPairFor(alg);
    const pem = buildCsr(privateKey, { subject: { organization: "" }, uris: ["spiffe://td/ns/x/sa/y"] });
    assert.match(openssl(["req", "-verify", "-noout"], pem) + "verify OK", /verify OK/);
    const text = openssl(["req", "-noout", "-text"], pem);
    assert.match(text, /URI:spiffe:\/\/td\/ns\/x\/sa\/y/);
    const csr = parseCsr(pem);
    assert.equal(csr.keyAlgorithm, alg);
    assert.deepEqual(csr.sans.uris, ["spiffe://td/ns/x/sa/y"]);
  }
  const { privateKey } = generateKeyPairFor("ec-p256");
  const ca = parseCsr(
    buildCsr(privateKey, { subject: { commonName: "int" }, uris: ["spiffe://td"], ca: true }),
  );
  assert.equal(ca.requestsCa, true);
  assert.equal(ca.commonName, "int");
});

test("fast RSA key import (PKCS#1 path) yields the same key as the SPKI import", () => {
  for (const bits of [2048, 3072]) {
    const { csrPem } = opensslCsr(["-newkey", `rsa:${bits}`]);
    const csr = parseCsr(csrPem);
    const viaSpki = createPublicKey({ key: Buffer.from(csr.spki), format: "der", type: "spki" });
    assert.ok(csr.publicKey.equals(viaSpki));
  }
});
