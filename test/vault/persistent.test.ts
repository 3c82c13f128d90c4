// Vault misbehaving: sealed, stopped and restarted. Uses the persistent
// (raft, init/unseal) OpenBao so state survives the restart like in production.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import {
  VaultClient,
  VaultSealedError,
  VaultUnavailableError,
  connectVault,
  readKvField,
  writeKv,
  type ConnectedVault,
} from "../../src/vault/index.js";

const FAST = { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 50 };
let bao: OpenBao;
let root: VaultClient;
let dir: string;
let mesh: ConnectedVault;

before(async () => {
  bao = await startOpenBao({ persistent: true });
  root = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken, retry: FAST });
  dir = await mkdtemp(join(tmpdir(), "meshvault-vault-persist-"));
  await writeKv(root, "vault:secret/data/pki/istiod#certificate", { certificate: "CERT" });
  await root.write("sys/policies/acl/kv-reader", {
    policy: `path "secret/data/pki/*" { capabilities = ["read"] }`,
  });
  await root.write("sys/auth/approle", { type: "approle" });
  await root.write("auth/approle/role/mesh", { token_policies: ["kv-reader"], token_ttl: "300s" });
  const rid = await root.read<{ role_id: string }>("auth/approle/role/mesh/role-id");
  const sid = await root.write<{ secret_id: string }>("auth/approle/role/mesh/secret-id", {});
  await writeFile(join(dir, "role-id"), rid?.data?.role_id ?? "");
  await writeFile(join(dir, "secret-id"), sid?.data?.secret_id ?? "");
  mesh = connectVault(
    {
      address: bao.addr,
      skipVerify: false,
      auth: { method: "approle", roleIdFile: join(dir, "role-id"), secretIdFile: join(dir, "secret-id") },
    },
    { retry: FAST },
  );
  await mesh.tokens.start();
});

after(async () => {
  mesh?.close();
  root?.close();
  await bao?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const ref = "vault:secret/data/pki/istiod#certificate";

test("a sealed Vault is reported as sealed, retryable, with the unseal command; unsealing recovers", async () => {
  await bao.seal();
  await assert.rejects(readKvField(mesh.client, ref), (e: unknown) => {
    assert.ok(e instanceof VaultSealedError, String(e));
    assert.equal(e.status, 503);
    assert.equal(e.retryable, true);
    assert.equal(e.category, "unavailable");
    assert.match(e.message, new RegExp(`Vault at ${bao.addr} is sealed: unseal it \\(bao operator unseal`));
    assert.match(e.message, /gave up after 3 attempts/);
    return true;
  });
  await bao.unseal();
  assert.equal((await readKvField(mesh.client, ref)).value, "CERT");
});

test("a stopped Vault is unavailable (retryable); after a restart the same client and token work again", async () => {
  const before = mesh.tokens.info();
  await bao.halt();
  await assert.rejects(readKvField(mesh.client, ref), (e: unknown) => {
    assert.ok(e instanceof VaultUnavailableError, String(e));
    assert.equal(e.retryable, true);
    assert.equal(e.unavailable, true);
    assert.equal(e.denied, false);
    assert.match(e.message, /connection refused.*is Vault running at .*Check VAULT_ADDR/);
    return true;
  });
  await bao.start(); // restarts on the same port and unseals; raft kept the data
  assert.equal((await readKvField(mesh.client, ref)).value, "CERT");
  assert.equal(
    mesh.tokens.info().logins,
    before.logins,
    "the token survived the restart: no new login needed",
  );
});

test("a request in flight while Vault restarts succeeds thanks to retries", async () => {
  const slowRetry = new VaultClient(
    { address: bao.addr, skipVerify: false },
    {
      token: bao.rootToken,
      retry: { maxAttempts: 30, baseDelayMs: 100, maxDelayMs: 300 },
    },
  );
  await bao.halt();
  const pending = readKvField(slowRetry, ref);
  const restarted = bao.start();
  assert.equal((await pending).value, "CERT");
  await restarted;
  slowRetry.close();
});
