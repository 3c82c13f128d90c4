// Rotation state in Vault KV v2 on a REAL OpenBao: every write carries `options.cas` (the version
// last read, 0 when there was none), so when two operators advance the same phase at once the
// second is refused with the same message as the ConfigMap store and the state is unchanged.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { VaultClient } from "../../src/vault/index.js";
import { vaultRotationStore, type Phase, type RotationState } from "../../src/rotation/state.js";
import { stateThrough, twoOperatorsAdvanceTheSamePhase } from "./state-fixture.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";

let bao: OpenBao;
let admin: VaultClient;

before(async () => {
  bao = await startOpenBao();
  admin = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
});
after(async () => {
  admin?.close();
  await bao?.stop();
});

const state = (id: string, ...phases: Phase[]): RotationState =>
  stateThrough("vault-intermediate", id, ...phases);

const store = (path: string) => vaultRotationStore(admin, `vault:secret/data/${path}`);

async function currentVersion(path: string): Promise<number | undefined> {
  const r = await admin.read<{ current_version?: number }>(`secret/metadata/${path}`);
  return r?.data?.current_version;
}

test("KV v2: two operators advance the same phase at once: the second is refused and the state is unchanged", async () => {
  const path = "meshvault/root-rotation/concurrent";
  await twoOperatorsAdvanceTheSamePhase({
    open: () => store(path),
    authority: "vault-intermediate",
    where: `vault:secret/data/${path}`,
    afterRefusal: async () =>
      assert.equal(await currentVersion(path), 2, "prepared (1) and a's trust-both (2) only"),
  });
});

test("KV v2: two operators start a rotation at once (cas 0): the second is refused", async () => {
  const path = "meshvault/root-rotation/two-starts";
  const [a, b] = [store(path), store(path)];
  assert.equal(await a.read(), undefined);
  assert.equal(await b.read(), undefined);
  await a.write(state("r-a", "prepared"));
  await assert.rejects(
    b.write(state("r-b", "prepared")),
    /it now holds rotation r-a at phase prepared; this step \(to prepared\) was not recorded/,
  );
  assert.equal((await store(path).read())?.id, "r-a");
  assert.equal(await currentVersion(path), 1);
});

test("KV v2: a write refused by an identical state (a retried POST whose first attempt landed) is not a conflict", async () => {
  const path = "meshvault/root-rotation/retried";
  const [a, b] = [store(path), store(path)];
  await a.read();
  await b.read();
  const same = state("r-1", "prepared");
  await a.write(same);
  await b.write(same); // cas 0 refused, but what Vault holds is exactly this write
  await b.write(state("r-1", "prepared", "trust-both")); // and b continues from the version it found
  assert.equal((await store(path).read())?.phase, "trust-both");
  assert.equal(await currentVersion(path), 2);
});

test("KV v2: a state deleted with kv delete (versions left) says how to start over", async () => {
  const path = "meshvault/root-rotation/deleted";
  const s = store(path);
  await s.read();
  await s.write(state("r-old", "prepared", "trust-both", "switched", "retired"));
  await admin.request("DELETE", `secret/data/${path}`);
  assert.equal(await s.read(), undefined);
  await assert.rejects(
    s.write(state("r-new", "prepared")),
    /rotation state vault:secret\/data\/meshvault\/root-rotation\/deleted holds only deleted versions[\s\S]*bao kv metadata delete secret\/meshvault\/root-rotation\/deleted/,
  );
  await admin.request("DELETE", `secret/metadata/${path}`);
  assert.equal(await s.read(), undefined);
  await s.write(state("r-new", "prepared"));
  assert.equal((await store(path).read())?.id, "r-new");
});

test("KV v1 rotation state is refused: it has no check-and-set", () => {
  assert.throws(
    () => vaultRotationStore(admin, "vault:kv/meshvault/root-rotation"),
    (err: Error) => {
      assert.equal(err.name, "VaultConfigError");
      assert.match(
        err.message,
        /rotation\.state vault:kv\/meshvault\/root-rotation is a KV v1 reference: KV v1 has no check-and-set/,
      );
      assert.match(err.message, /vault:<mount>\/data\/<path>/);
      return true;
    },
  );
});
