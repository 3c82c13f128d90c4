// What a server does in each phase of a root rotation, in-process with two real local CAs
// (old under local-ca, new under local-ca-next-<id>) and the state in a file; and a
// cross-signed rotation judged by openssl.
import { test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalAuthority } from "../../src/authority/local.js";
import { silentLog } from "../../src/log/logger.js";
import { buildCsr, parseCsr } from "../../src/pki/csr.js";
import { generateKeyPairFor } from "../../src/pki/keys.js";
import { workloadId } from "../../src/pki/spiffe.js";
import { RotatingAuthority } from "../../src/rotation/rotating-authority.js";
import { localNextDir } from "../../src/rotation/server-hook.js";
import { loadServerConfig } from "../../src/config/load.js";
import { checkIssuedChain } from "../../src/agent/issued.js";
import { RotationOperator } from "../../src/rotation/operator.js";
import { EC_P256_KEY, openssl, opensslSelfSigned, opensslVerify, withTempDir } from "../helpers/openssl.js";
import { fileRotationStore, type Phase, type RotationState } from "../../src/rotation/state.js";

const fp = (pem: string): string => new X509Certificate(pem).fingerprint256;

test("phases: bundle old -> old+new -> old+new -> new; signer switches once; old-leaf expiry tracked; finalised steps aside", async () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-rotating-"));
  try {
    const local = (dirName?: string) =>
      new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local", ...(dirName ? { dirName } : {}) });
    const base = local();
    const id = "r-test";
    const prep = local(localNextDir(id));
    await prep.start();
    await prep.close();
    const store = fileRotationStore(join(dir, "root-rotation.json"));
    let now = Date.parse("2026-11-30T12:00:00Z");
    let switches = 0;
    const a = new RotatingAuthority(base, {
      store,
      makeNext: () => local(localNextDir(id)),
      pollMs: 3_600_000,
      maxTtlSeconds: 3600,
      log: silentLog,
      onSignerChange: () => switches++,
      now: () => now,
    });
    await a.start();
    const oldRoot = base.trustBundle()[0]!;
    const newRoot = readFileSync(join(dir, localNextDir(id), "root-cert.pem"), "utf8");
    const ref = (pem: string) => ({ fingerprint: fp(pem), pem, subject: "s", notAfter: "n" });
    const state = (phase: Phase): RotationState => ({
      id,
      authority: "local",
      phase,
      old: ref(oldRoot),
      next: ref(newRoot),
      startedAt: new Date(now).toISOString(),
      history: [{ phase, at: new Date(now).toISOString() }],
    });
    const id1 = workloadId("cluster.local", "default", "sleep");
    const sign = async (ttlSeconds = 600) =>
      a.sign({ csr: parseCsr(buildCsr(generateKeyPairFor("ec-p256").privateKey, {})), ttlSeconds }, id1);
    assert.deepEqual(a.trustBundle().map(fp), [fp(oldRoot)]);
    assert.equal(a.view().phase, "none");

    for (const [phase, bundle, signer] of [
      ["prepared", [oldRoot], "current"],
      ["trust-both", [oldRoot, newRoot], "current"],
      ["switched", [oldRoot, newRoot], "next"],
      ["retired", [newRoot], "next"],
    ] as const) {
      if (phase === "switched") {
        // The last old-root leaf: 600 s from "now".
        await sign(600);
      }
      await store.write(state(phase));
      await a.poll();
      assert.deepEqual(a.trustBundle().map(fp), bundle.map(fp), phase);
      const v = a.view();
      assert.equal(v.phase, phase);
      assert.equal(v.signer, signer, phase);
      assert.equal(v.nextReady, true);
      const issued = await sign();
      assert.deepEqual(issued.rootsPem.map(fp), bundle.map(fp), `${phase}: CreateCertificate's root element`);
      const signedBy = issued.intermediatesPem[0]!;
      const underNew = new X509Certificate(signedBy).checkIssued(new X509Certificate(newRoot));
      assert.equal(underNew, signer === "next", `${phase}: the intermediate that signed`);
      if (phase === "switched") {
        assert.equal(v.oldLeavesValidUntil, new Date(now + 600_000).toISOString());
        now += 10_000; // signing under the new root does not move it
        await sign(3000);
        assert.equal(a.view().oldLeavesValidUntil, new Date(now - 10_000 + 600_000).toISOString());
      }
    }
    assert.equal(switches, 1, "one switch of signer");
    await a.close();

    // Finalised (the new root is what the configured authority loads now): the wrapper steps aside.
    const promoted = local(localNextDir(id));
    const after = new RotatingAuthority(promoted, {
      store,
      makeNext: () => {
        throw new Error("not needed once finalised");
      },
      pollMs: 3_600_000,
      maxTtlSeconds: 3600,
      log: silentLog,
    });
    await after.start();
    assert.equal(after.view().phase, "none");
    assert.deepEqual(after.trustBundle().map(fp), [fp(newRoot)]);
    await after.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("cross-signed (local): prepare certifies the new root with the old; in switched a peer holding only the old root, or only the new, verifies a new leaf (openssl); retired drops the cross-certificate", async () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-cross-"));
  try {
    const config = loadServerConfig({ env: {}, overrides: { dataDir: dir, "authority.type": "local" } });
    const base = new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local" });
    await base.start(); // the old root
    const store = fileRotationStore(join(dir, "root-rotation.json"));
    const op = new RotationOperator({ config, store, servers: [], checks: [], crossSign: true });
    const did = await op.step(await op.observe(), false);
    assert.match(did.join("\n"), /cross-signed: the new root certified by the old one/);
    const prepared = (await store.read())!;
    assert.ok(prepared.cross, "the state records the cross-certificate");
    const a = new RotatingAuthority(base, {
      store,
      makeNext: (s) =>
        new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local", dirName: localNextDir(s.id) }),
      pollMs: 3_600_000,
      maxTtlSeconds: 3600,
      log: silentLog,
    });
    await a.start();
    const id1 = workloadId("cluster.local", "default", "sleep");
    const sign = () =>
      a.sign({ csr: parseCsr(buildCsr(generateKeyPairFor("ec-p256").privateKey, {})), ttlSeconds: 600 }, id1);
    const at = (phase: Phase) => store.write({ ...prepared, phase });
    const verifies = (leafPem: string, untrusted: string[], rootPem: string): boolean =>
      withTempDir((tmp) => {
        writeFileSync(join(tmp, "leaf.pem"), leafPem);
        writeFileSync(join(tmp, "chain.pem"), untrusted.join(""));
        writeFileSync(join(tmp, "root.pem"), rootPem);
        try {
          openssl([
            "verify",
            "-CAfile",
            join(tmp, "root.pem"),
            "-untrusted",
            join(tmp, "chain.pem"),
            join(tmp, "leaf.pem"),
          ]);
          return true;
        } catch {
          return false;
        }
      });

    await at("trust-both");
    await a.poll();
    assert.equal((await sign()).intermediatesPem.length, 1, "trust-both: the old intermediate alone");
    await at("switched");
    await a.poll();
    const issued = await sign();
    assert.equal(a.view().sendsCross, prepared.cross.fingerprint);
    assert.equal(issued.intermediatesPem.length, 2, "switched: new intermediate + cross-certificate");
    assert.equal(issued.intermediatesPem[1], prepared.cross.pem);
    assert.ok(verifies(issued.leafPem, issued.intermediatesPem, prepared.old.pem), "old root only");
    assert.ok(verifies(issued.leafPem, issued.intermediatesPem, prepared.next.pem), "new root only");
    // Without the cross-certificate the old root alone does not reach the new leaf.
    assert.ok(!verifies(issued.leafPem, issued.intermediatesPem.slice(0, 1), prepared.old.pem));
    // What istio-agent gets: leaf, each intermediate, the bundle last; our agent's own check passes.
    const key = generateKeyPairFor("ec-p256").privateKey;
    const forAgent = await a.sign({ csr: parseCsr(buildCsr(key, {})), ttlSeconds: 600 }, id1);
    checkIssuedChain(
      [forAgent.leafPem, ...forAgent.intermediatesPem, forAgent.rootsPem.join("")],
      key,
      id1.uri,
    );

    await at("retired");
    await a.poll();
    const after = await sign();
    assert.equal(after.intermediatesPem.length, 1, "retired: no cross-certificate");
    assert.ok(verifies(after.leafPem, after.intermediatesPem, prepared.next.pem));
    await a.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("--import-root (local): an openssl-made root becomes the next CA (key 0600), its intermediate under it; a bundle without the key is refused", async () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-import-"));
  try {
    const config = loadServerConfig({ env: {}, overrides: { dataDir: dir, "authority.type": "local" } });
    const base = new LocalAuthority({ dataDir: dir, trustDomain: "cluster.local" });
    await base.start();
    await base.close();
    const cert = join(dir, "ext-cert.pem");
    const key = join(dir, "ext-key.pem");
    opensslSelfSigned({ keyArgs: EC_P256_KEY, days: 3650, subj: "/O=my-org", cert, key });
    const store = fileRotationStore(join(dir, "root-rotation.json"));
    const op = (pem: string) =>
      new RotationOperator({
        config,
        store,
        servers: [],
        checks: [],
        importRoot: { pem, source: "ext.pem" },
      });
    const certPem = readFileSync(cert, "utf8");
    const keyless = op(certPem);
    await assert.rejects(
      async () => keyless.step(await keyless.observe(), false),
      /--import-root ext\.pem: no private key in the file/,
    );
    assert.equal(await store.read(), undefined);
    const o = op(certPem + readFileSync(key, "utf8"));
    await o.step(await o.observe(), false);
    const s = (await store.read())!;
    assert.equal(s.imported, true);
    assert.equal(s.next.pem.trim(), certPem.trim());
    const next = join(dir, localNextDir(s.id));
    assert.equal(statSync(join(next, "root-key.pem")).mode & 0o777, 0o600);
    const [ok, out] = opensslVerify(certPem, "", readFileSync(join(next, "ca-cert.pem"), "utf8"), "any");
    assert.ok(ok, out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
