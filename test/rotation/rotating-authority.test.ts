// What a server does in each phase of a root rotation, in-process with two real local CAs
// (old under local-ca, new under local-ca-next-<id>) and the state in a file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalAuthority } from "../../src/authority/local.js";
import { silentLog } from "../../src/log/logger.js";
import { buildCsr, parseCsr } from "../../src/pki/csr.js";
import { generateKeyPairFor } from "../../src/pki/keys.js";
import { workloadId } from "../../src/pki/spiffe.js";
import { RotatingAuthority } from "../../src/rotation/rotating-authority.js";
import { localNextDir } from "../../src/rotation/server-hook.js";
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
