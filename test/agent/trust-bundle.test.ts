// How an identity's trust bundle is composed from a CA answer's roots and the root file, for the
// orders roots-order.test.ts does not drive through a server: a root file behind the CA, a file
// that is not the mesh's, and file readings that hold no root.
import { test } from "node:test";
import assert from "node:assert/strict";
import { composeTrustBundle, RootFileState } from "../../src/agent/trust-bundle.js";
import { selfSignedRootPem } from "../helpers/pki-fixtures.js";

const [oldRoot, newRoot, tlsRoot] = [
  selfSignedRootPem("old", 3600),
  selfSignedRootPem("new", 3600),
  selfSignedRootPem("the CA's TLS root", 3600),
];

test("a root file behind the CA: the answer adds the roots the file has not listed yet, and the file later drops them", () => {
  const file = new RootFileState();
  assert.equal(file.read(oldRoot), true);
  // trust-both reached the CA first: its answer's new root is kept.
  assert.equal(composeTrustBundle(oldRoot + newRoot, oldRoot, file), oldRoot + newRoot);
  assert.equal(file.read(oldRoot + newRoot), true);
  // retired reached the CA first: the old root stays until the file drops it.
  assert.equal(composeTrustBundle(newRoot, newRoot, file), oldRoot + newRoot);
  assert.equal(file.read(newRoot), true);
  assert.equal(composeTrustBundle(newRoot, newRoot, file), newRoot);
  // An answer from before retired brings nothing back.
  assert.equal(composeTrustBundle(oldRoot + newRoot, newRoot, file), newRoot);
});

test("a root file without the root the certificate chains to is not the mesh's: the answer's roots alone", () => {
  const file = new RootFileState();
  file.read(tlsRoot);
  assert.equal(composeTrustBundle(oldRoot, oldRoot, file), oldRoot);
  assert.equal(composeTrustBundle(oldRoot, oldRoot, undefined), oldRoot);
});

test("readings without a root, or with the same roots, change nothing", () => {
  const file = new RootFileState();
  assert.equal(file.read(oldRoot + newRoot), true);
  assert.equal(file.read(""), false);
  assert.equal(file.read("-----BEGIN CERTIFICATE-----\ntruncat"), false);
  assert.equal(file.read(newRoot + oldRoot), false, "the same roots in another order");
  assert.deepEqual(file.roots.join(""), oldRoot + newRoot);
});
