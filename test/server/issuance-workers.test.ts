// Issuance worker threads (src/server/issuance-pool.ts): CSR verification and leaf signing on
// every core must give what the main-thread path gives, follow CA reloads in every worker,
// and be what a configured server really uses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadCaMaterial, signLeaf } from "../../src/authority/ca-material.js";
import { loadServerConfig } from "../../src/config/load.js";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { silentLogger } from "../../src/log/logger.js";
import { buildCsr, CsrError, decodeCsr, parseCsr } from "../../src/pki/csr.js";
import { decodePem, encodePem } from "../../src/pki/pem.js";
import { generateKeyPairFor, privateKeyPem } from "../../src/pki/keys.js";
import { workloadId } from "../../src/pki/spiffe.js";
import { IssuancePool } from "../../src/server/issuance-pool.js";
import { startCaServer } from "../../src/server/run.js";
import { caClient } from "../helpers/ca-client.js";
import { cliSync } from "../helpers/cli.js";
import { makeTestCa, type TestCa } from "../helpers/pki-fixtures.js";
import { waitFor } from "../helpers/wait.js";

const ID = workloadId("cluster.local", "default", "sleep");

const materialOf = (ca: TestCa) =>
  loadCaMaterial({
    certPem: ca.intermediate.pem,
    keyPem: privateKeyPem(ca.signer.key),
    rootPem: ca.root.pem,
    source: "test CA",
  });

/** True when `leafPem` was signed by `ca`'s intermediate. */
const signedBy = (leafPem: string, ca: TestCa): boolean =>
  new X509Certificate(leafPem).verify(new X509Certificate(ca.intermediate.pem).publicKey);

test("workers check CSRs and sign leaves exactly as the main thread does, and follow a new CA", async () => {
  const pool = new IssuancePool(2);
  try {
    await pool.ready();
    const material = materialOf(makeTestCa());
    for (const alg of ["ec-p256", "rsa-2048"] as const) {
      const pem = buildCsr(generateKeyPairFor(alg).privateKey, { uris: [ID.uri] });
      // Decoded here, its signature checked on the worker in the signing job.
      const there = await pool.signLeaf(material, { csr: decodeCsr(pem), ttlSeconds: 3600 }, ID);
      const here = signLeaf(material, { csr: parseCsr(pem), ttlSeconds: 3600 }, ID);
      const [x, y] = [new X509Certificate(there.leafPem), new X509Certificate(here.leafPem)];
      assert.equal(x.subjectAltName, y.subjectAltName);
      assert.ok(x.publicKey.equals(y.publicKey));
    }
    // The signature's last byte changed: the CSR decodes, but its signature does not verify.
    const der = decodePem(buildCsr(generateKeyPairFor("ec-p256").privateKey, { uris: [ID.uri] }))[0]!.der;
    der[der.length - 1]! ^= 1;
    const bad = encodePem("CERTIFICATE REQUEST", der);
    const why = (() => {
      try {
        parseCsr(bad);
      } catch (err) {
        return err as Error;
      }
      assert.fail("a corrupted CSR parsed");
    })();
    assert.match(why.message, /signature does not verify/);
    await assert.rejects(
      Promise.resolve(pool.signLeaf(material, { csr: decodeCsr(bad), ttlSeconds: 3600 }, ID)),
      (err: Error) => {
        assert.ok(err instanceof CsrError);
        assert.equal(err.message, why.message);
        return true;
      },
    );

    const csr = parseCsr(buildCsr(generateKeyPairFor("ec-p256").privateKey, {}));
    const [caA, caB] = [makeTestCa(), makeTestCa()];
    const [a, b] = [materialOf(caA), materialOf(caB)];
    // Several in flight at once, so both workers sign under each CA.
    for (const [m, ca] of [
      [a, caA],
      [b, caB],
      [a, caA],
    ] as const) {
      const issued = await Promise.all(
        Array.from({ length: 6 }, () => pool.signLeaf(m, { csr, ttlSeconds: 3600 }, ID)),
      );
      for (const chain of issued) {
        assert.ok(signedBy(chain.leafPem, ca), "signed with the material it was given");
        assert.deepEqual(chain.intermediatesPem, m.intermediatesPem);
        assert.deepEqual(chain.rootsPem, m.rootsPem);
        const here = signLeaf(m, { csr, ttlSeconds: 3600 }, ID);
        const [x, y] = [new X509Certificate(chain.leafPem), new X509Certificate(here.leafPem)];
        assert.equal(x.subjectAltName, y.subjectAltName);
        assert.ok(x.publicKey.equals(y.publicKey));
      }
    }
    assert.equal(pool.done.inline, 0, "nothing fell back to the main thread");
    assert.equal(pool.done.worker, 3 + 18);
  } finally {
    await pool.close();
  }
});

test("a server with workers issues on them, and a reloaded files CA reaches every worker", async () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-workers-"));
  const caDir = join(dir, "cacerts");
  const write = (ca: TestCa): void => {
    writeFileSync(join(caDir, "ca-cert.pem"), ca.intermediate.pem);
    writeFileSync(join(caDir, "root-cert.pem"), ca.root.pem);
    writeFileSync(join(caDir, "cert-chain.pem"), ca.intermediate.pem);
    writeFileSync(join(caDir, "ca-key.pem"), privateKeyPem(ca.signer.key), { mode: 0o600 });
  };
  mkdirSync(caDir);
  const [ca1, ca2] = [makeTestCa(), makeTestCa()];
  write(ca1);
  const config = loadServerConfig({
    env: {},
    overrides: {
      dataDir: join(dir, "data"),
      "listen.grpc": "127.0.0.1:0",
      "listen.http": "127.0.0.1:0",
      authority: { type: "files", dir: caDir, pollInterval: 1 },
      workers: 2,
    },
  });
  const server = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
  await server.firstAttempt;
  const token = await mintLocalToken({
    dataDir: join(dir, "data"),
    trustDomain: "cluster.local",
    namespace: "default",
    serviceAccount: "sleep",
  });
  let client = caClient(`127.0.0.1:${server.grpcPort}`, server.rootsPem());
  try {
    assert.equal(server.issuance?.size, 2);
    await server.issuance!.ready();
    const issue = async (): Promise<string> =>
      (
        await client.create(buildCsr(generateKeyPairFor("ec-p256").privateKey, { uris: [ID.uri] }), { token })
      )[0]!;
    const before = { ...server.issuance!.done };
    const leaves = await Promise.all(Array.from({ length: 6 }, issue));
    for (const l of leaves) assert.ok(signedBy(l, ca1));
    // Each certificate is one job on a worker: the CSR's signature check and the signing.
    assert.equal(server.issuance!.done.worker - before.worker, 6);

    write(ca2);
    await waitFor("the reloaded CA's trust bundle", async () =>
      server.rootsPem().includes(ca2.root.pem.trim()),
    );
    client.close();
    client = caClient(`127.0.0.1:${server.grpcPort}`, server.rootsPem() + ca1.root.pem);
    const after = await Promise.all(Array.from({ length: 6 }, issue));
    for (const l of after) assert.ok(signedBy(l, ca2), "every worker signs with the reloaded CA");
    assert.equal(server.issuance!.done.inline, before.inline, "nothing fell back to the main thread");
  } finally {
    client.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("meshvault server --workers refuses a bad count, naming the field", () => {
  const r = cliSync(["server", "--workers", "-1", "--data-dir", mkdtempSync(join(tmpdir(), "meshvault-w-"))]);
  assert.equal(r.code, 2, r.out + r.err);
  assert.match(r.err, /workers/);
});
