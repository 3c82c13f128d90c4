import "reflect-metadata";
import { test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate as NodeX509 } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { parseCsr } from "../../src/pki/csr.js";
import {
  issueLeaf,
  issueCa,
  createSigner,
  parseIssued,
  BACKDATE_MS,
  IssueError,
} from "../../src/pki/issue.js";
import { generateKeyPairFor, spkiDer } from "../../src/pki/keys.js";
import { keyIdentifier, parseCertificate } from "../../src/pki/certificate.js";
import { fitCommonName } from "../../src/pki/name.js";
import { makeTestCa } from "../helpers/pki-fixtures.js";
import { opensslCsr, opensslVerify, openssl } from "../helpers/openssl.js";

const ID = "spiffe://cluster.local/ns/default/sa/sleep";

test("workload leaf is an Istio-shaped SPIFFE X.509-SVID (checked by @peculiar/x509 as oracle)", () => {
  const ca = makeTestCa("ec-p256");
  const csr = parseCsr(opensslCsr(["-newkey", "rsa:2048"]).csrPem);
  const now = new Date();
  const leaf = issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 3600, now });
  const c = new x509.X509Certificate(leaf.pem);
  assert.equal(c.subject, "");
  assert.equal(c.issuer, "O=test, CN=test intermediate");
  const san = c.getExtension(x509.SubjectAlternativeNameExtension)!;
  assert.equal(san.critical, true);
  assert.deepEqual(san.names.toJSON(), [{ type: "url", value: ID }]);
  const bc = c.getExtension(x509.BasicConstraintsExtension)!;
  assert.equal(bc.ca, false);
  assert.equal(bc.critical, true);
  const ku = c.getExtension(x509.KeyUsagesExtension)!;
  assert.equal(ku.critical, true);
  assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
  const eku = c.getExtension(x509.ExtendedKeyUsageExtension)!;
  assert.deepEqual([...eku.usages].sort(), ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
  const aki = c.getExtension(x509.AuthorityKeyIdentifierExtension)!;
  assert.equal(aki.keyId, Buffer.from(ca.intermediate.subjectKeyId!).toString("hex"));
  assert.equal(c.notBefore.getTime(), Math.floor((now.getTime() - BACKDATE_MS) / 1000) * 1000);
  assert.equal(c.notAfter.getTime(), Math.floor((now.getTime() + 3600_000) / 1000) * 1000);
  // 128-bit positive serial
  const serial = BigInt("0x" + c.serialNumber);
  assert.ok(serial > 0n && serial < 2n ** 128n);
  // Node's own parser agrees and the signature verifies with the intermediate's key.
  const n = new NodeX509(leaf.pem);
  assert.ok(n.verify(new NodeX509(ca.intermediate.pem).publicKey));
  assert.equal(n.subjectAltName, `URI:${ID}`);
  // Our parser reads back what we wrote.
  const ours = parseCertificate(leaf.pem);
  assert.deepEqual(ours.sans.uris, [ID]);
  assert.equal(ours.isCa, false);
  assert.deepEqual(ours.keyUsage, ["digitalSignature", "keyEncipherment"]);
});

test("serials differ between certificates", () => {
  const ca = makeTestCa();
  const csr = parseCsr(opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]).csrPem);
  const serials = new Set<string>();
  for (let i = 0; i < 50; i++)
    serials.add(
      parseIssued(issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 60 })).serialHex,
    );
  assert.equal(serials.size, 50);
});

test("notAfter is clamped to the signer's notAfter", () => {
  const ca = makeTestCa("ec-p256", 3600);
  const csr = parseCsr(opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]).csrPem);
  const leaf = parseIssued(issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 86400 * 30 }));
  assert.equal(leaf.notAfter.getTime(), ca.intermediate.notAfter.getTime());
});

test("CN only when asked; then the SAN is not critical", () => {
  const ca = makeTestCa();
  const csr = parseCsr(opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]).csrPem);
  const c = new x509.X509Certificate(
    issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 60, commonName: "web" }).pem,
  );
  assert.equal(c.subject, "CN=web");
  assert.equal(c.getExtension(x509.SubjectAlternativeNameExtension)!.critical, false);
});

test("openssl verifies leaves for sslclient and sslserver, for RSA, P-256 and P-384 CAs", () => {
  for (const alg of ["ec-p256", "ec-p384", "rsa-2048", "ed25519"] as const) {
    const ca = makeTestCa(alg);
    const csr = parseCsr(opensslCsr(["-newkey", "rsa:2048"]).csrPem);
    const leaf = issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 3600 });
    for (const purpose of ["sslclient", "sslserver"]) {
      const [ok, out] = opensslVerify(ca.root.pem, ca.intermediate.pem, leaf.pem, purpose);
      assert.ok(ok, `${alg} ${purpose}: ${out}`);
    }
  }
});

test("CA certificates: root self-signed, intermediate with pathLen, both CA:true keyCertSign cRLSign", () => {
  const ca = makeTestCa("ec-p256");
  for (const cert of [ca.root, ca.intermediate]) {
    const c = new x509.X509Certificate(cert.pem);
    const bc = c.getExtension(x509.BasicConstraintsExtension)!;
    assert.equal(bc.ca, true);
    const ku = c.getExtension(x509.KeyUsagesExtension)!;
    assert.ok(ku.usages & x509.KeyUsageFlags.keyCertSign && ku.usages & x509.KeyUsageFlags.cRLSign);
  }
  assert.equal(
    new x509.X509Certificate(ca.intermediate.pem).getExtension(x509.BasicConstraintsExtension)!.pathLength,
    0,
  );
  assert.equal(ca.root.pathLen, undefined);
  assert.match(openssl(["x509", "-noout", "-text"], ca.root.pem), /CA:TRUE/);
});

test("createSigner refuses a mismatched key or a non-CA certificate", () => {
  const ca = makeTestCa();
  const other = generateKeyPairFor("ec-p256");
  assert.throws(
    () => createSigner(ca.intermediate, other.privateKey),
    (e: Error) => e instanceof IssueError && /does not match/.test(e.message),
  );
  const csr = parseCsr(opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]).csrPem);
  const leaf = parseIssued(issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 60 }));
  assert.throws(() => createSigner(leaf, other.privateKey), IssueError);
  assert.throws(
    () => issueCa({ subject: { commonName: "x" }, key: other.publicKey, ttlSeconds: 60 }),
    /needs the private key/,
  );
});

test("key usage: keyEncipherment only for RSA keys (RFC 8813, RFC 8410), digitalSignature always; SKI present", () => {
  const ca = makeTestCa();
  for (const [alg, usages] of [
    ["rsa-2048", x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment],
    ["ec-p256", x509.KeyUsageFlags.digitalSignature],
    ["ec-p384", x509.KeyUsageFlags.digitalSignature],
    ["ed25519", x509.KeyUsageFlags.digitalSignature],
  ] as const) {
    const spki = spkiDer(generateKeyPairFor(alg).publicKey);
    const c = new x509.X509Certificate(issueLeaf(ca.signer, { spki, spiffeId: ID, ttlSeconds: 60 }).pem);
    assert.equal(c.getExtension(x509.KeyUsagesExtension)!.usages, usages, alg);
    const ski = c.getExtension(x509.SubjectKeyIdentifierExtension)!;
    assert.equal(ski.keyId, Buffer.from(keyIdentifier(spki)).toString("hex"), alg);
  }
});

test("issueLeaf refuses a signer that has expired, naming it and when", () => {
  const ca = makeTestCa("ec-p256", 3600);
  const spki = spkiDer(generateKeyPairFor("ec-p256").publicKey);
  const later = new Date(ca.intermediate.notAfter.getTime() + 1000);
  assert.throws(
    () => issueLeaf(ca.signer, { spki, spiffeId: ID, ttlSeconds: 60, now: later }),
    (e: Error) =>
      e instanceof IssueError &&
      e.message.includes("test intermediate") &&
      e.message.includes(`expired at ${ca.intermediate.notAfter.toISOString()}`),
  );
  // At the very instant of expiry too (notAfter is the last valid second).
  assert.throws(
    () => issueLeaf(ca.signer, { spki, spiffeId: ID, ttlSeconds: 60, now: ca.intermediate.notAfter }),
    /expired/,
  );
});

test("names over the RFC 5280 64-character bound are refused, not issued", () => {
  const ca = makeTestCa();
  const spki = spkiDer(generateKeyPairFor("ec-p256").publicKey);
  assert.throws(
    () => issueLeaf(ca.signer, { spki, spiffeId: ID, ttlSeconds: 60, commonName: "x".repeat(65) }),
    /65 characters; a certificate name allows at most 64/,
  );
  assert.equal(fitCommonName("meshvault root CA", "cluster.local"), "meshvault root CA (cluster.local)");
  assert.equal(fitCommonName("meshvault root CA", "a".repeat(60)), "meshvault root CA");
});
