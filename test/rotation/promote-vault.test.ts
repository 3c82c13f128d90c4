// Two vault-intermediate root rotations back to back in one process on a real OpenBao, through
// the server's own rotation hook: at retired the signer under the new root becomes the base, so
// the second rotation's prepared/trust-both leaves chain to the first's new root, never to the
// retired one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadServerConfig } from "../../src/config/load.js";
import { createAuthority } from "../../src/authority/factory.js";
import { silentLog, silentLogger } from "../../src/log/logger.js";
import { buildCsr, parseCsr } from "../../src/pki/csr.js";
import { generateKeyPairFor } from "../../src/pki/keys.js";
import { workloadId } from "../../src/pki/spiffe.js";
import { RotationOperator } from "../../src/rotation/operator.js";
import { rotationStore, withRootRotation } from "../../src/rotation/server-hook.js";
import type { Phase } from "../../src/rotation/state.js";
import { VaultClient } from "../../src/vault/index.js";
import { startOpenBao } from "../helpers/openbao.js";
import { chainsTo, mountRoot } from "./drive.js";

const fp = (pem: string): string => new X509Certificate(pem).fingerprint256;

test("vault-intermediate on OpenBao: two rotations without a restart; the second's prepared/trust-both leaves chain to the first's new root", async () => {
  const bao = await startOpenBao();
  const dir = mkdtempSync(join(tmpdir(), "meshvault-promote-vault-"));
  const admin = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  try {
    await mountRoot(bao, "meshvault old root");
    const env = { VAULT_TOKEN: bao.rootToken };
    const config = loadServerConfig({
      env: {},
      overrides: {
        dataDir: dir,
        authority: { type: "vault-intermediate" },
        vault: { address: bao.addr, auth: { method: "token" } },
        rotation: { state: `file:${join(dir, "root-rotation.json")}`, pollInterval: "1h" },
      },
    });
    const ctx = {
      trustDomain: config.trustDomain,
      dataDir: dir,
      log: silentLogger(),
      vault: config.vault,
      env,
    };
    const a = withRootRotation(createAuthority(config.authority, ctx), config, ctx, silentLog, () => {});
    await a.start();
    const root0 = a.trustBundle()[0]!;
    let now = Date.now();
    const store = rotationStore(config.rotation.state!, () => admin);
    const op = new RotationOperator({
      config,
      store,
      admin: () => admin,
      servers: [],
      checks: [],
      now: () => now,
    });
    const step = async (phase: Phase): Promise<void> => {
      const obs = await op.observe();
      await op.step(phase === "prepared" ? { ...obs, next: "prepared" } : obs, false);
      assert.equal((await store.read())?.phase, phase);
      await a.poll();
    };
    const id1 = workloadId("cluster.local", "default", "sleep");
    const chainsToRoot = async (rootPem: string): Promise<boolean> =>
      chainsTo(
        await a.sign(
          { csr: parseCsr(buildCsr(generateKeyPairFor("ec-p256").privateKey, {})), ttlSeconds: 60 },
          id1,
        ),
        rootPem,
      );
    const rotate = async (): Promise<string> => {
      await step("prepared");
      const s = (await store.read())!;
      return s.next.pem;
    };
    const finish = async (): Promise<void> => {
      await step("switched");
      now += (config.certificates.maxTtl + 1) * 1000;
      await step("retired");
    };

    const root1 = await rotate();
    await step("trust-both");
    await finish();
    assert.equal(a.view().phase, "none");
    assert.deepEqual(a.view().baseRoots, [fp(root1)]);
    assert.ok(await chainsToRoot(root1));

    now += 60_000; // a distinct rotation id
    const root2 = await rotate();
    assert.equal((await store.read())!.old.fingerprint, fp(root1));
    assert.ok(await chainsToRoot(root1), "prepared: under root1");
    assert.ok(!(await chainsToRoot(root0)), "prepared: never under the retired root0");
    await step("trust-both");
    assert.ok(await chainsToRoot(root1), "trust-both: under root1");
    assert.ok(!(await chainsToRoot(root0)), "trust-both: never under the retired root0");
    await finish();
    assert.ok(await chainsToRoot(root2));
    assert.deepEqual(a.view().baseRoots, [fp(root2)]);
    await a.close();
  } finally {
    admin.close();
    await bao.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
