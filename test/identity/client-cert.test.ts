import { test } from "node:test";
import assert from "node:assert/strict";
import { ClientCertAuthenticator } from "../../src/identity/client-cert.js";
import { AuthenticationError, AuthenticatorUnavailableError } from "../../src/identity/authenticator.js";
import { generateKeyPairFor, spkiDer } from "../../src/pki/keys.js";
import { createSigner, issueCa, issueLeaf, parseIssued, type LeafOptions } from "../../src/pki/issue.js";
import { makeTestCa, type TestCa } from "../helpers/pki-fixtures.js";

const TD = "cluster.local";
const ca = makeTestCa();
const other = makeTestCa();
const workloadKey = generateKeyPairFor("ec-p256");

function svid(from: TestCa, opts: Partial<LeafOptions> = {}): Uint8Array {
  return issueLeaf(from.signer, {
    spki: spkiDer(workloadKey.publicKey),
    spiffeId: `spiffe://${TD}/ns/default/sa/httpbin`,
    ttlSeconds: 3600,
    ...opts,
  }).der;
}

/** The peer chain as TLS delivers it: leaf, then the intermediate. */
const chain = (leaf: Uint8Array, from: TestCa = ca) => [leaf, from.intermediate.der];

let bundle = [ca.root.pem];
const auth = new ClientCertAuthenticator({ trustDomain: TD, trustBundle: () => bundle });

async function rejected(peerCertificates: Uint8Array[], re: RegExp, a = auth): Promise<void> {
  await assert.rejects(a.authenticate({ peerCertificates }), (err: Error) => {
    assert.ok(
      err instanceof AuthenticationError,
      `expected AuthenticationError, got ${err.name}: ${err.message}`,
    );
    assert.match(err.message, re);
    return true;
  });
}

test("a valid SVID chaining to the trust bundle yields its SPIFFE ID", async () => {
  const caller = await auth.authenticate({ peerCertificates: chain(svid(ca)) });
  assert.equal(caller?.identity.uri, "spiffe://cluster.local/ns/default/sa/httpbin");
  assert.equal(caller?.namespace, "default");
  assert.equal(caller?.serviceAccount, "httpbin");
  assert.equal(caller?.method, "client-cert");
});

test("no client certificate is not this authenticator's business", async () => {
  assert.equal(await auth.authenticate({ peerCertificates: [] }), undefined);
  assert.equal(await auth.authenticate({ authorization: "Bearer x.y.z", peerCertificates: [] }), undefined);
});

test("a certificate from another CA is rejected", async () => {
  await rejected(chain(svid(other), other), /does not verify: .*does not chain to the trust bundle/);
  // Even when the leaf is sent alone.
  await rejected([svid(other)], /does not chain to the trust bundle/);
});

test("a leaf without its intermediate does not chain to a root-only bundle", async () => {
  await rejected([svid(ca)], /does not chain to the trust bundle/);
});

test("an expired SVID is rejected with its expiry", async () => {
  // A CA (same root) whose intermediate dates from three hours ago, so a 10-minute leaf
  // issued back then can be expired now while its chain is still valid.
  const then = new Date(Date.now() - 3 * 3600_000);
  const intKey = generateKeyPairFor("ec-p256");
  const intermediate = parseIssued(
    issueCa(
      { subject: { commonName: "old intermediate" }, key: intKey.publicKey, ttlSeconds: 86400, now: then },
      ca.rootSigner,
    ),
  );
  const old: TestCa = { ...ca, intermediate, signer: createSigner(intermediate, intKey.privateKey) };
  const fresh = svid(old);
  assert.ok(
    await auth.authenticate({ peerCertificates: chain(fresh, old) }),
    "control: a current leaf from it verifies",
  );
  const expired = svid(old, { now: then, ttlSeconds: 600 });
  await rejected(chain(expired, old), /spiffe:\/\/cluster.local\/ns\/default\/sa\/httpbin .*expired at/);
});

test("a CA certificate presented as the leaf is rejected", async () => {
  await rejected([ca.intermediate.der], /is a CA certificate/);
  // A CA cert with a SPIFFE URI, signed by our root, is still not a workload.
  const fakeCa = issueCa(
    {
      subject: { commonName: "sneaky" },
      key: workloadKey.publicKey,
      ttlSeconds: 3600,
      uris: [`spiffe://${TD}/ns/default/sa/httpbin`],
    },
    ca.rootSigner,
  );
  await rejected([fakeCa.der], /is a CA certificate/);
});

test("a SPIFFE ID in another trust domain is rejected, naming both trust domains", async () => {
  const foreign = svid(ca, { spiffeId: "spiffe://other.example/ns/default/sa/httpbin" });
  await rejected(chain(foreign), /trust domain "other.example", but this CA issues for "cluster.local"/);
});

test("a non-Istio SPIFFE path, or a URI that is not a SPIFFE ID, is rejected", async () => {
  await rejected(chain(svid(ca, { spiffeId: `spiffe://${TD}/workload/x` })), /not an Istio workload ID/);
  await rejected(chain(svid(ca, { spiffeId: "https://example.com/x" })), /URI SAN is not a SPIFFE ID/);
});

test("garbage instead of a certificate is rejected with its position", async () => {
  await rejected([new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])], /client certificate #1 cannot be parsed/);
});

test("the trust bundle is read on each call: a root added at runtime is trusted at once", async () => {
  const cert = chain(svid(other), other);
  await rejected(cert, /does not chain/);
  bundle = [ca.root.pem, other.root.pem];
  try {
    assert.equal(
      (await auth.authenticate({ peerCertificates: cert }))?.identity.uri,
      `spiffe://${TD}/ns/default/sa/httpbin`,
    );
  } finally {
    bundle = [ca.root.pem];
  }
  await rejected(cert, /does not chain/);
});

test("an empty or broken trust bundle is the server's problem: unavailable", async () => {
  for (const tb of [[], ["not a pem"]]) {
    const a = new ClientCertAuthenticator({ trustDomain: TD, trustBundle: () => tb });
    await assert.rejects(
      a.authenticate({ peerCertificates: chain(svid(ca)) }),
      AuthenticatorUnavailableError,
    );
  }
});

test("a chaining certificate whose SPIFFE ID has names Kubernetes would never allow is refused", async () => {
  for (const id of [
    `spiffe://${TD}/ns/Default/sa/x`,
    `spiffe://${TD}/ns/kube-system/sa/admin/sa/x`,
    `spiffe://${TD}/ns/${"n".repeat(64)}/sa/x`,
    `spiffe://${TD}`,
  ])
    await rejected(chain(svid(ca, { spiffeId: id })), /is not an Istio workload ID/);
});
