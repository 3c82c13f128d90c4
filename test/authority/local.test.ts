import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalAuthority } from "../../src/authority/local.js";
import { parseCsr } from "../../src/pki/csr.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { workloadId } from "../../src/pki/spiffe.js";
import { opensslCsr, opensslVerify } from "../helpers/openssl.js";
import { FakeClock } from "../helpers/fake-clock.js";
import { recordingLog } from "../helpers/recording-log.js";

const id = workloadId("cluster.local", "default", "sleep");
const csr = parseCsr(opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]).csrPem);

function withDir(fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), "meshvault-local-"));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  "first start creates root (10y) and intermediate (1y, P-256), keys 0600, and signs verifiable leaves",
  withDir(async (dir) => {
    const a = new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local" });
    await a.start();
    try {
      for (const f of ["root-key.pem", "ca-key.pem"])
        assert.equal(statSync(join(dir, "local-ca", f)).mode & 0o777, 0o600);
      assert.equal(statSync(join(dir, "local-ca")).mode & 0o777, 0o700);
      const root = parseCertificate(a.trustBundle()[0]!);
      const years = (root.notAfter.getTime() - root.notBefore.getTime()) / (365 * 86400_000);
      assert.ok(years > 9.99 && years < 10.01, `root lifetime ${years}y`);
      const chain = await a.sign({ csr, ttlSeconds: 3600 }, id);
      const inter = parseCertificate(chain.intermediatesPem[0]!);
      assert.equal(inter.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
      assert.equal(inter.pathLen, 0);
      const [ok, out] = opensslVerify(
        chain.rootsPem.join(""),
        chain.intermediatesPem.join(""),
        chain.leafPem,
        "sslclient",
      );
      assert.ok(ok, out);
    } finally {
      await a.close();
    }
  }),
);

test(
  "restart reuses the same CA; inconsistent or incomplete files are clear errors",
  withDir(async (dir) => {
    const a = new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local" });
    await a.start();
    const roots = a.trustBundle();
    await a.close();
    const b = new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local" });
    await b.start();
    assert.deepEqual(b.trustBundle(), roots);
    await b.close();

    // A key that does not belong to the intermediate.
    const other = mkdtempSync(join(tmpdir(), "meshvault-local-other-"));
    const c = new LocalAuthority({ dataDir: other, trustDomain: "cluster.local" });
    await c.start();
    await c.close();
    const good = readFileSync(join(dir, "local-ca", "ca-key.pem"));
    writeFileSync(join(dir, "local-ca", "ca-key.pem"), readFileSync(join(other, "local-ca", "ca-key.pem")));
    rmSync(other, { recursive: true, force: true });
    await assert.rejects(
      new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local" }).start(),
      /does not match.*inconsistent/s,
    );
    writeFileSync(join(dir, "local-ca", "ca-key.pem"), good);
    rmSync(join(dir, "local-ca", "root-key.pem"));
    await assert.rejects(
      new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local" }).start(),
      /incomplete: found .* but not the root/,
    );
  }),
);

test(
  "an intermediate near expiry is re-issued from the same root",
  withDir(async (dir) => {
    const a = new LocalAuthority({
      dataDir: dir,
      trustDomain: "cluster.local",
      intermediateTtlSeconds: 3600,
    });
    await a.start();
    try {
      const first = (await a.sign({ csr, ttlSeconds: 60 }, id)).intermediatesPem[0];
      assert.equal(a.renewIfDue(), false, "a fresh intermediate is not due");
      // Same files, but a policy that calls 97% of life left "due": the intermediate is re-issued.
      const b = new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local", renewFraction: 0.99 });
      await b.start();
      const second = (await b.sign({ csr, ttlSeconds: 60 }, id)).intermediatesPem[0];
      assert.notEqual(second, first);
      assert.deepEqual(b.trustBundle(), a.trustBundle(), "same root");
      await b.close();
    } finally {
      await a.close();
    }
  }),
);

test(
  "a running authority re-issues its intermediate on schedule and retries a failed re-issue with backoff (fake clock)",
  withDir(async (dir) => {
    const clock = new FakeClock(Date.now());
    const log = recordingLog();
    const a = new LocalAuthority({
      dataDir: dir,
      trustDomain: "cluster.local",
      intermediateTtlSeconds: 3600,
      clock,
      log,
    });
    await a.start();
    try {
      const first = a.current()!.signer.cert;
      const due = first.notBefore.getTime() + 0.75 * (first.notAfter.getTime() - first.notBefore.getTime());
      assert.equal(clock.pending().length, 1);
      assert.ok(
        Math.abs(clock.pending()[0]! - (due - clock.now())) < 1,
        "one timer, at 75% of the intermediate's life",
      );
      // The root key becomes unreadable: the re-issue fails, the old intermediate stays in use.
      const keyPath = join(dir, "local-ca", "root-key.pem");
      const rootKey = readFileSync(keyPath, "utf8");
      writeFileSync(keyPath, "not a key", { mode: 0o600 });
      await clock.next();
      assert.equal(a.current()!.signer.cert.serialHex, first.serialHex);
      assert.equal(a.ready().ready, true, "the old intermediate is still valid");
      const warn = log.records.find((r) => r.level === "warn");
      assert.ok(warn, "the failure is logged");
      assert.equal(warn.obj["what"], "the local intermediate CA");
      assert.match(String(warn.obj["err"]), /root-key\.pem is not a readable PEM private key/);
      const retryIn = clock.pending()[0]!;
      assert.ok(retryIn <= 2000, `retried within seconds (backoff), not at the next check: ${retryIn} ms`);
      // The key is back: the retry re-issues from the same root.
      writeFileSync(keyPath, rootKey, { mode: 0o600 });
      await clock.next();
      const second = a.current()!.signer.cert;
      assert.notEqual(second.serialHex, first.serialHex);
      const signedBy = parseCertificate((await a.sign({ csr, ttlSeconds: 60 }, id)).intermediatesPem[0]!);
      assert.equal(signedBy.serialHex, second.serialHex, "new leaves chain to the new intermediate");
    } finally {
      await a.close();
    }
    assert.deepEqual(clock.pending(), [], "close() cancels the schedule");
  }),
);
