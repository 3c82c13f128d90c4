// The hand-written DER issue path (src/pki/issue.ts) is the hot path because @peculiar/x509
// was ~20-35x slower in bench/ca.ts. The library stays as the oracle: from the same inputs
// both must produce leaves that parse identically, through @peculiar/x509, Node's
// X509Certificate and our own parser. Only the serial and the signature bytes differ.
import "reflect-metadata";
import { test } from "node:test";
import assert from "node:assert/strict";
import { webcrypto, X509Certificate as NodeX509 } from "node:crypto";
import * as x509 from "@peculiar/x509";
import { buildCsr, parseCsr } from "../src/pki/csr.js";
import { generateKeyPairFor, type KeyAlgorithm } from "../src/pki/keys.js";
import { createSigner, issueCa, issueLeaf, parseIssued } from "../src/pki/issue.js";
import { parseCertificateDer, type Certificate } from "../src/pki/certificate.js";
import { workloadId } from "../src/pki/spiffe.js";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const TTL = 86_400;

async function caFor(alg: KeyAlgorithm) {
  const rootKey = generateKeyPairFor(alg);
  const root = issueCa({
    subject: { commonName: "oracle root", organization: "meshvault" },
    key: rootKey.privateKey,
    ttlSeconds: 10 * 365 * 86400,
  });
  const rootSigner = createSigner(parseIssued(root), rootKey.privateKey);
  const interKey = generateKeyPairFor(alg);
  const inter = issueCa(
    {
      subject: { commonName: "oracle intermediate", organization: "meshvault" },
      key: interKey.publicKey,
      ttlSeconds: 365 * 86400,
      pathLen: 0,
    },
    rootSigner,
  );
  return createSigner(parseIssued(inter), interKey.privateKey);
}

/** The leaf the library builds from the same inputs as issueLeaf. */
async function libraryLeaf(
  signer: Awaited<ReturnType<typeof caFor>>,
  csrPem: string,
  spiffeId: string,
  notBefore: Date,
  notAfter: Date,
): Promise<Uint8Array> {
  const req = new x509.Pkcs10CertificateRequest(csrPem);
  assert.ok(await req.verify(), "the library verifies the CSR too");
  const caCert = new x509.X509Certificate(Buffer.from(signer.cert.der));
  const ec = signer.cert.publicKey.asymmetricKeyType === "ec";
  const curve = signer.cert.publicKey.asymmetricKeyDetails?.namedCurve === "secp384r1" ? "P-384" : "P-256";
  const hash = curve === "P-384" ? "SHA-384" : "SHA-256";
  const alg = ec ? { name: "ECDSA", namedCurve: curve } : { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
  const signingKey = await webcrypto.subtle.importKey(
    "pkcs8",
    signer.key.export({ type: "pkcs8", format: "der" }),
    alg,
    false,
    ["sign"],
  );
  const publicKey = await req.publicKey.export();
  const rsaLeaf = publicKey.algorithm.name === "RSASSA-PKCS1-v1_5";
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: "01",
    subject: "",
    issuer: caCert.subject,
    notBefore,
    notAfter,
    publicKey,
    signingKey,
    signingAlgorithm: ec ? { name: "ECDSA", hash } : { name: "RSASSA-PKCS1-v1_5" },
    extensions: [
      // keyEncipherment only for RSA leaf keys (RFC 8813).
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | (rsaLeaf ? x509.KeyUsageFlags.keyEncipherment : 0),
        true,
      ),
      new x509.ExtendedKeyUsageExtension(
        [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
        false,
      ),
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.AuthorityKeyIdentifierExtension(Buffer.from(signer.keyId).toString("hex"), false),
      await x509.SubjectKeyIdentifierExtension.create(publicKey, false),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: spiffeId }], true),
    ],
  });
  return new Uint8Array(cert.rawData);
}

/** Everything a relying party reads from a leaf, through three parsers. */
function view(der: Uint8Array): Record<string, unknown> {
  const lib = new x509.X509Certificate(der);
  const node = new NodeX509(der);
  const ours: Certificate = parseCertificateDer(der);
  const ku = lib.getExtension(x509.KeyUsagesExtension);
  const eku = lib.getExtension(x509.ExtendedKeyUsageExtension);
  const bc = lib.getExtension(x509.BasicConstraintsExtension);
  const san = lib.getExtension(x509.SubjectAlternativeNameExtension);
  return {
    subject: lib.subject,
    issuer: lib.issuer,
    notBefore: lib.notBefore.toISOString(),
    notAfter: lib.notAfter.toISOString(),
    publicKey: Buffer.from(lib.publicKey.rawData).toString("hex"),
    signatureAlgorithm: lib.signatureAlgorithm,
    extensions: lib.extensions.map((e) => ({
      oid: e.type,
      critical: e.critical,
      value: Buffer.from(e.value).toString("hex"),
    })),
    keyUsage: { flags: ku?.usages, critical: ku?.critical },
    extKeyUsage: { usages: eku?.usages, critical: eku?.critical },
    basicConstraints: { ca: bc?.ca, pathLength: bc?.pathLength, critical: bc?.critical },
    san: { names: san?.names.toJSON(), critical: san?.critical },
    node: {
      subject: node.subject,
      issuer: node.issuer,
      subjectAltName: node.subjectAltName,
      ca: node.ca,
      keyUsage: node.keyUsage,
      validFrom: node.validFrom,
      validTo: node.validTo,
      publicKey: node.publicKey.export({ type: "spki", format: "der" }).toString("hex"),
    },
    ours: {
      subject: ours.subject,
      issuer: ours.issuer,
      isCa: ours.isCa,
      pathLen: ours.pathLen,
      keyUsage: ours.keyUsage,
      extKeyUsage: ours.extKeyUsage,
      sans: ours.sans,
      authorityKeyId: Buffer.from(ours.authorityKeyId ?? []).toString("hex"),
      extensions: ours.extensions.map((e) => ({ oid: e.oid, critical: e.critical })),
    },
  };
}

for (const [caAlg, csrAlg] of [
  ["ec-p256", "rsa-2048"],
  ["ec-p256", "ec-p256"],
  ["ec-p384", "ec-p384"],
  ["rsa-2048", "rsa-3072"],
] as const) {
  test(`${csrAlg} CSR, ${caAlg} CA: hand-written and @peculiar/x509 leaves parse identically`, async () => {
    const signer = await caFor(caAlg);
    const id = workloadId("cluster.local", "default", "oracle").uri;
    const csrPem = buildCsr(generateKeyPairFor(csrAlg).privateKey, { uris: [id] });
    const csr = parseCsr(csrPem);
    const now = new Date(Math.floor(Date.now() / 1000) * 1000);
    const ours = issueLeaf(signer, { spki: csr.spki, spiffeId: id, ttlSeconds: TTL, now });
    const theirs = await libraryLeaf(signer, csrPem, id, ours.notBefore, ours.notAfter);
    const a = view(ours.der);
    const b = view(theirs);
    assert.deepEqual(a, b);
    // The fields the SVID profile fixes, spelled out so a shared mistake cannot hide.
    assert.equal(a.subject, "");
    assert.deepEqual((a.san as { names: unknown }).names, [{ type: "url", value: id }]);
    assert.equal((a.san as { critical: boolean }).critical, true);
    assert.equal((a.basicConstraints as { ca: boolean }).ca, false);
    assert.equal(ours.notBefore.getTime(), now.getTime() - 120_000);
    assert.equal(ours.notAfter.getTime(), now.getTime() + TTL * 1000);
    // Both verify under the CA key.
    const caPub = await new x509.X509Certificate(Buffer.from(signer.cert.der)).publicKey.export();
    assert.ok(await new x509.X509Certificate(ours.der).verify({ publicKey: caPub, signatureOnly: true }));
    assert.ok(await new x509.X509Certificate(theirs).verify({ publicKey: caPub, signatureOnly: true }));
  });
}
