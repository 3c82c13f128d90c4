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
import { ReloadListeners } from "../../src/authority/reload-listeners.js";
import type { MaterialReloadEvent } from "../../src/authority/authority.js";
import { localNextDir } from "../../src/rotation/server-hook.js";
import { loadServerConfig } from "../../src/config/load.js";
import { checkIssuedChain } from "../../src/agent/issued.js";
import { RotationOperator } from "../../src/rotation/operator.js";
import { EC_P256_KEY, openssl, opensslSelfSigned, opensslVerify, withTempDir } from "../helpers/openssl.js";
import { fileRotationStore, type Phase, type RotationState } from "../../src/rotation/state.js";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { chainsTo } from "./drive.js";

const fp = (pem: string): string => new X509Certificate(pem).fingerprint256;

/** A local rotation `id` from `oldRoot` to `newRoot` at `phase`, as root rotate writes it. */
function localRotation(
  id: string,
  phase: Phase,
  oldRoot: string,
  newRoot: string,
  at: string,
): RotationState {
  const ref = (pem: string) => ({ fingerprint: fp(pem), pem, subject: "s", notAfter: "n" });
  return {
    id,
    authority: "local",
    phase,
    old: ref(oldRoot),
    next: ref(newRoot),
    startedAt: at,
    history: [{ phase, at }],
  };
}

/** Local CAs of class `Ctor` in `dir` (`dirName` under it), each recorded in `made`. */
function localMaker<T extends LocalAuthority>(
  dir: string,
  Ctor: new (o: ConstructorParameters<typeof LocalAuthority>[0]) => T,
  made: T[] = [],
): (dirName?: string) => T {
  return (dirName) => {
    const l = new Ctor({ dataDir: dir, trustDomain: "cluster.local", ...(dirName ? { dirName } : {}) });
    made.push(l);
    return l;
  };
}

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
    const state = (phase: Phase): RotationState =>
      localRotation(id, phase, oldRoot, newRoot, new Date(now).toISOString());
    const id1 = workloadId("cluster.local", "default", "sleep");
    const sign = async (ttlSeconds = 600) =>
      a.sign({ csr: parseCsr(buildCsr(generateKeyPairFor("ec-p256").privateKey, {})), ttlSeconds }, id1);
    assert.deepEqual(a.trustBundle().map(fp), [fp(oldRoot)]);
    assert.equal(a.view().phase, "none");

    for (const [phase, bundle, signer] of [
      ["prepared", [oldRoot], "current"],
      ["trust-both", [oldRoot, newRoot], "current"],
      ["switched", [oldRoot, newRoot], "next"],
      // Retired: the signer under the new root became the base (the wrapper steps aside as if finalised).
      ["retired", [newRoot], "current"],
    ] as const) {
      if (phase === "switched") {
        // The last old-root leaf: 600 s from "now".
        await sign(600);
      }
      await store.write(state(phase));
      await a.poll();
      assert.deepEqual(a.trustBundle().map(fp), bundle.map(fp), phase);
      const v = a.view();
      assert.equal(v.phase, phase === "retired" ? "none" : phase);
      assert.equal(v.signer, signer, phase);
      assert.equal(v.nextReady, phase !== "retired");
      const issued = await sign();
      assert.deepEqual(issued.rootsPem.map(fp), bundle.map(fp), `${phase}: CreateCertificate's root element`);
      const signedBy = issued.intermediatesPem[0]!;
      const underNew = new X509Certificate(signedBy).checkIssued(new X509Certificate(newRoot));
      assert.equal(
        underNew,
        phase === "switched" || phase === "retired",
        `${phase}: the intermediate that signed`,
      );
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

test("two rotations back to back without a restart (local): on retired the new root's signer becomes the base and the retired one is closed; the second rotation's prepared/trust-both leaves chain to the first's new root; prepare refuses while a server's base is the retired root", async () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-twice-"));
  const http = createServer();
  try {
    const config = loadServerConfig({ env: {}, overrides: { dataDir: dir, "authority.type": "local" } });
    const made: CountingLocal[] = [];
    class CountingLocal extends LocalAuthority {
      closed = 0;
      override async close(): Promise<void> {
        this.closed++;
        return super.close();
      }
    }
    const local = localMaker(dir, CountingLocal, made);
    let now = Date.parse("2026-11-30T12:00:00Z");
    const store = fileRotationStore(join(dir, "root-rotation.json"));
    const server = (base: CountingLocal) =>
      new RotatingAuthority(base, {
        store,
        makeNext: (s) => local(localNextDir(s.id)),
        makeSuccessor: () => local(), // what server-hook does for local: the configured directory
        pollMs: 3_600_000,
        maxTtlSeconds: 3600,
        log: silentLog,
        now: () => now,
      });
    const base0 = local();
    const a = server(base0);
    await a.start();
    // A replica that has not read the state since switched (its poll is due later).
    const lagging = server(local());
    await lagging.start();
    http.on("request", (req, res) => {
      if (req.url === "/rotation") res.end(JSON.stringify(lagging.view()));
      else res.end(lagging.trustBundle().join(""));
    });
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    const root0 = base0.trustBundle()[0]!;
    const op = new RotationOperator({ config, store, servers: [], checks: [], now: () => now });
    const step = async (phase: Phase): Promise<void> => {
      const obs = await op.observe();
      if (phase === "retired") assert.deepEqual(obs.blockers, []);
      // After a retired rotation `root rotate` reports done; the next prepare is asked for explicitly.
      await op.step(phase === "prepared" ? { ...obs, next: "prepared" } : obs, false);
      assert.equal((await store.read())?.phase, phase);
      await a.poll();
    };
    const id1 = workloadId("cluster.local", "default", "sleep");
    const sign = () =>
      a.sign({ csr: parseCsr(buildCsr(generateKeyPairFor("ec-p256").privateKey, {})), ttlSeconds: 600 }, id1);

    // Rotation 1: root0 -> root1.
    await step("prepared");
    const s1 = (await store.read())!;
    await step("trust-both");
    await step("switched");
    await lagging.poll();
    assert.equal(lagging.view().signer, "next");
    now += (config.certificates.maxTtl + 1) * 1000;
    await step("retired");
    const root1 = s1.next.pem;
    assert.equal(a.view().phase, "none", "finalised without a restart");
    assert.deepEqual(a.view().baseRoots, [fp(root1)]);
    assert.equal(base0.closed, 1, "the retired root's signer is closed");
    const promoted = made.find((l) => l !== base0 && l.trustBundle()[0] === a.trustBundle()[0] && !l.closed);
    assert.ok(promoted, "the configured directory's authority (now under root1) is the base");
    assert.ok(chainsTo(await sign(), root1));

    assert.equal((await op.observe()).next, "done", "without --new a retired rotation stays finished");

    // root rotate --new: after retired, the next step prepares another rotation. The lagging
    // replica's base is still root0: prepare refuses, names it and the fix, creates nothing.
    const checking = new RotationOperator({
      config,
      store,
      servers: [url],
      checks: [],
      now: () => now,
      newRotation: true,
    });
    now += 60_000;
    let obs = await checking.observe();
    assert.equal(obs.next, "prepared");
    const blocker = obs.blockers.find((b) => b.includes("base signer"));
    assert.ok(blocker, obs.blockers.join("\n"));
    assert.match(
      blocker,
      new RegExp(`^${url}: its base signer is under root ${fp(root0)}, not the current root ${fp(root1)}`),
    );
    assert.match(blocker, /restart that server/);
    await assert.rejects(checking.step(obs, false), /base signer is under root/);
    assert.equal((await store.read())?.id, s1.id, "no new rotation recorded");
    await lagging.poll(); // it reads retired and promotes too
    obs = await checking.observe();
    assert.deepEqual(
      obs.blockers.filter((b) => b.includes("base signer")),
      [],
    );

    // Rotation 2 without a restart: its old root is root1.
    await checking.step(obs, false);
    assert.equal((await store.read())?.phase, "prepared");
    await a.poll();
    assert.equal((await checking.observe()).next, "trust-both", "--new starts one rotation, then follows it");
    const s2 = (await store.read())!;
    assert.notEqual(s2.id, s1.id);
    assert.equal(s2.old.fingerprint, fp(root1));
    for (const phase of ["prepared", "trust-both"] as const) {
      if (phase === "trust-both") await step("trust-both");
      const issued = await sign();
      assert.ok(chainsTo(issued, root1), `${phase}: under the second rotation's old root (root1)`);
      assert.ok(!chainsTo(issued, root0), `${phase}: never under the retired root0`);
    }
    await step("switched");
    assert.ok(chainsTo(await sign(), s2.next.pem), "switched: under root2");
    now += (config.certificates.maxTtl + 1) * 1000;
    await step("retired");
    assert.equal(promoted.closed, 1, "rotation 2's retire closes root1's signer");
    assert.deepEqual(a.view().baseRoots, [s2.next.fingerprint]);
    assert.ok(chainsTo(await sign(), s2.next.pem));
    await a.close();
    await lagging.close();
  } finally {
    http.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A real local CA that also reports reloads, as files, vault-kv and vault-intermediate do; the
 * test fires them to see which reach the server's listener (meshvault_ca_reloads_total).
 */
class ReportingLocal extends LocalAuthority {
  private readonly listeners = new ReloadListeners<MaterialReloadEvent>("test listener", () => silentLog);
  onReload(listener: (e: MaterialReloadEvent) => void): () => void {
    return this.listeners.add(listener);
  }
  fire(ok: boolean): void {
    this.listeners.emit({ ok, at: new Date() });
  }
}

test("reloads are counted from whichever signer the server holds: the configured one, the one under the new root, and after retired its successor; the retired one no longer", async () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-rotating-reloads-"));
  try {
    const id = "r-reloads";
    const made: ReportingLocal[] = [];
    const local = localMaker(dir, ReportingLocal, made);
    const base = local();
    const prep = new LocalAuthority({
      dataDir: dir,
      trustDomain: "cluster.local",
      dirName: localNextDir(id),
    });
    await prep.start();
    await prep.close();
    const store = fileRotationStore(join(dir, "root-rotation.json"));
    const a = new RotatingAuthority(base, {
      store,
      makeNext: () => local(localNextDir(id)),
      pollMs: 3_600_000,
      maxTtlSeconds: 3600,
      log: silentLog,
    });
    const seen: boolean[] = [];
    a.onReload((e) => seen.push(e.ok));
    await a.start();
    base.fire(true);
    assert.deepEqual(seen, [true], "the configured signer's reload");

    const oldRoot = base.trustBundle()[0]!;
    const newRoot = readFileSync(join(dir, localNextDir(id), "root-cert.pem"), "utf8");
    const at = new Date().toISOString();
    const state = (phase: Phase): RotationState => localRotation(id, phase, oldRoot, newRoot, at);
    await store.write(state("switched"));
    await a.poll();
    const next = made[1]!;
    assert.ok(next && a.view().signer === "next", "the signer under the new root signs");
    next.fire(false);
    assert.deepEqual(seen, [true, false], "the new root's signer's refused reload");

    await store.write(state("retired"));
    await a.poll();
    assert.match(a.view().baseRoots?.join() ?? "", new RegExp(fp(newRoot)), "promoted to base");
    base.fire(true); // the retired signer (closed): no longer this server's
    next.fire(true); // the promoted one
    assert.deepEqual(seen, [true, false, true], "after retired: the promoted signer only");
    await a.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
