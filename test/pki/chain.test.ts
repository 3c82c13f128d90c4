import { test } from "node:test";
import assert from "node:assert/strict";
import { verifyChain, ChainError } from "../../src/pki/chain.js";
import { parseCsr } from "../../src/pki/csr.js";
import { issueLeaf, parseIssued, issueCa, createSigner } from "../../src/pki/issue.js";
import { generateKeyPairFor } from "../../src/pki/keys.js";
import { makeTestCa } from "../helpers/pki-fixtures.js";
import { opensslCsr } from "../helpers/openssl.js";

const csr = parseCsr(opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]).csrPem);
const ID = "spiffe://td/ns/a/sa/b";

test("verifies leaf -> intermediate -> root and returns the path", () => {
  const ca = makeTestCa();
  const leaf = parseIssued(issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 60 }));
  const path = verifyChain(leaf, [ca.intermediate], [ca.root]);
  assert.deepEqual(
    path.map((c) => c.serialHex),
    [leaf.serialHex, ca.intermediate.serialHex, ca.root.serialHex],
  );
});

test("names the certificate that does not chain", () => {
  const ca = makeTestCa();
  const other = makeTestCa();
  const leaf = parseIssued(issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 60 }));
  assert.throws(
    () => verifyChain(leaf, [ca.intermediate], [other.root]),
    (e: Error) =>
      e instanceof ChainError &&
      e.message.includes(ca.intermediate.serialHex) &&
      /does not chain/.test(e.message),
  );
  assert.throws(
    () => verifyChain(leaf, [], [ca.root]),
    (e: Error) => e.message.includes(leaf.serialHex),
  );
  assert.throws(() => verifyChain(leaf, [ca.intermediate], []), /trust bundle is empty/);
});

test("expired and not-yet-valid certificates fail with the date", () => {
  const ca = makeTestCa();
  const leaf = parseIssued(issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 60 }));
  assert.throws(
    () => verifyChain(leaf, [ca.intermediate], [ca.root], { at: new Date(Date.now() + 3600_000) }),
    /expired at/,
  );
  assert.throws(
    () => verifyChain(leaf, [ca.intermediate], [ca.root], { at: new Date(Date.now() - 3600_000) }),
    /not valid before/,
  );
});

test("pathLen 0 intermediate cannot have a CA below it; a leaf cannot sign", () => {
  const ca = makeTestCa();
  const subKey = generateKeyPairFor("ec-p256");
  const sub = parseIssued(
    issueCa({ subject: { commonName: "sub" }, key: subKey.publicKey, ttlSeconds: 600 }, ca.signer),
  );
  const leaf = parseIssued(
    issueLeaf(createSigner(sub, subKey.privateKey), { spki: csr.spki, spiffeId: ID, ttlSeconds: 60 }),
  );
  assert.throws(() => verifyChain(leaf, [sub, ca.intermediate], [ca.root]), /pathLen 0/);
});

test("a multi-root bundle verifies against whichever root issued the chain", () => {
  const a = makeTestCa();
  const b = makeTestCa();
  const leaf = parseIssued(issueLeaf(b.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 60 }));
  assert.equal(verifyChain(leaf, [b.intermediate], [a.root, b.root]).at(-1)!.serialHex, b.root.serialHex);
});
