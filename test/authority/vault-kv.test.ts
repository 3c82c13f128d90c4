// vault-kv (seed 001) end to end on a real OpenBao: the CA certificate and key live in
// KV (v2 and v1); meshvault validates them, signs, and hot-reloads new versions, refusing
// a bad one while the old CA keeps signing. Vault stopped: issuance continues.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createAuthority } from "../../src/authority/factory.js";
import type { VaultKvAuthority } from "../../src/authority/vault/index.js";
import type { CaServerHandle } from "../../src/server/run.js";
import { silentLogger } from "../../src/log/logger.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import type { CaClient } from "../helpers/ca-client.js";
import { opensslCsr, opensslVerify } from "../helpers/openssl.js";
import { waitFor } from "../helpers/wait.js";
import {
  TD,
  CaServers,
  approleLogin,
  approleVault,
  eventually,
  serverConfig,
  setupPki,
  startVaultFixture,
  writePolicy,
  type VaultFixture,
} from "./vault-fixture.js";

let fx: VaultFixture;
let rootPem: string;
let approle: Awaited<ReturnType<typeof approleLogin>>;
const cas = new CaServers();
const csr = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "/O=").csrPem;
const SLEEP = `spiffe://${TD}/ns/default/sa/sleep`;
const REF = "vault:secret/data/pki/istiod";

interface CaSet {
  certificate: string;
  privateKey: string;
  chain: string;
  root: string;
}

/** A CA (cert + key) as seed 001 stores it: an intermediate whose key Vault exported, signed by Vault's root. */
async function newCa(cn: string): Promise<CaSet> {
  const g = await fx.admin.write<{ csr: string; private_key: string }>(
    "pki_int/intermediate/generate/exported",
    {
      common_name: cn,
      key_type: "ec",
      key_bits: 256,
    },
  );
  const s = await fx.admin.write<{ certificate: string }>("pki/root/sign-intermediate", {
    csr: g!.data!.csr,
    common_name: cn,
    ttl: "720h",
    format: "pem",
  });
  const certificate = `${s!.data!.certificate.trim()}\n`;
  return { certificate, privateKey: g!.data!.private_key, chain: `${certificate}${rootPem}`, root: rootPem };
}

before(async () => {
  fx = await startVaultFixture(true);
  ({ rootPem } = await setupPki(fx.admin));
  await fx.admin.write("sys/mounts/kv", { type: "kv", options: { version: "1" } });
  await writePolicy(fx.admin, "kv-read", {
    "secret/data/pki/istiod": ["read"],
    "secret/metadata/pki/istiod": ["read"],
    "kv/pki/istiod": ["read"],
  });
  await writePolicy(fx.admin, "nothing", { "secret/data/unrelated": ["read"] });
  approle = await approleLogin(fx, "meshvault-kv", ["kv-read"]);
});

after(async () => {
  await cas.close();
  await fx?.close();
});

const vaultAuth = () => approleVault(approle);

async function start(
  name: string,
  authority: Record<string, unknown>,
): Promise<{ server: CaServerHandle; client: CaClient; kv: VaultKvAuthority }> {
  const config = serverConfig(fx, name, { type: "vault-kv", ...authority }, vaultAuth());
  // Built by the production factory, kept here to look at lastReloadError().
  const kv = createAuthority(config.authority, {
    trustDomain: config.trustDomain,
    dataDir: config.dataDir,
    log: silentLogger(),
    vault: config.vault,
  }) as VaultKvAuthority;
  const { server, client } = await cas.start(config, { authority: kv });
  return { server, client, kv };
}

function verify(chain: string[], expectedIssuerPem: string): void {
  assert.equal(chain.at(-1), rootPem);
  assert.deepEqual(parseCertificate(chain[0]!).sans.uris, [SLEEP]);
  assert.equal(chain[1]!.trim(), expectedIssuerPem.trim(), "signed by the CA from KV");
  const [ok, out] = opensslVerify(rootPem, chain.slice(1, -1).join(""), chain[0]!, "sslclient");
  assert.ok(ok, out);
}

test("KV v2: CA from KV signs; new version hot-reloaded; a bad version refused while the old CA keeps signing", async () => {
  const first = await newCa("kv ca 1");
  await fx.admin.write("secret/data/pki/istiod", { data: first });
  const { client, kv } = await start("kv2", {
    certificate: `${REF}#certificate`,
    privateKey: `${REF}#privateKey`,
    chain: `${REF}#chain`,
    root: `${REF}#root`,
    pollInterval: 1,
  });
  const token = await fx.token("default", "sleep");
  verify(await client.create(csr, { token }), first.certificate);

  const second = await newCa("kv ca 2");
  await fx.admin.write("secret/data/pki/istiod", { data: second });
  await eventually(async () => verify(await client.create(csr, { token }), second.certificate), 10_000);
  assert.equal(kv.lastReloadError(), undefined);

  // Key of another CA: refused, loudly, and the second CA keeps signing.
  const third = await newCa("kv ca 3");
  await fx.admin.write("secret/data/pki/istiod", { data: { ...second, privateKey: third.privateKey } });
  const failure = await eventually(async () => {
    const e = kv.lastReloadError();
    assert.ok(e, "reload error reported");
    return e;
  }, 10_000);
  assert.match(failure.message, /key|does not match/i);
  assert.doesNotMatch(failure.message, /PRIVATE KEY/);
  verify(await client.create(csr, { token }), second.certificate);
  assert.deepEqual(kv.reloadCounts(), { succeeded: 1, failed: 1 });

  // A good version after the bad one clears the error.
  await fx.admin.write("secret/data/pki/istiod", { data: third });
  await eventually(async () => verify(await client.create(csr, { token }), third.certificate), 10_000);
  assert.equal(kv.lastReloadError(), undefined);
});

test("KV v1 with the root taken from the end of the chain", async () => {
  const ca = await newCa("kv v1 ca");
  await fx.admin.write("kv/pki/istiod", {
    certificate: ca.certificate,
    privateKey: ca.privateKey,
    chain: ca.chain,
  });
  const { client, server } = await start("kv1", {
    certificate: "vault:kv/pki/istiod#certificate",
    privateKey: "vault:kv/pki/istiod#privateKey",
    chain: "vault:kv/pki/istiod#chain",
  });
  assert.equal(server.rootsPem(), rootPem);
  verify(await client.create(csr, { token: await fx.token("default", "sleep") }), ca.certificate);
});

test("a CA that does not chain to the given root: not ready, naming the certificate", async () => {
  const ca = await newCa("orphan");
  const other = await fx.admin.write<{ certificate: string }>("sys/mounts/pki_other", {
    type: "pki",
  });
  void other;
  const otherRoot = await fx.admin.write<{ certificate: string }>("pki_other/root/generate/internal", {
    common_name: "some other root",
    key_type: "ec",
    ttl: "8760h",
  });
  await fx.admin.write("secret/data/pki/orphan", { data: { ...ca, root: otherRoot!.data!.certificate } });
  await writePolicy(fx.admin, "kv-read", {
    "secret/data/pki/*": ["read"],
    "secret/metadata/pki/*": ["read"],
    "kv/pki/istiod": ["read"],
  });
  const reason = await cas.notReadyReason(
    serverConfig(
      fx,
      "orphan",
      {
        type: "vault-kv",
        certificate: "vault:secret/data/pki/orphan#certificate",
        privateKey: "vault:secret/data/pki/orphan#privateKey",
        root: "vault:secret/data/pki/orphan#root",
      },
      vaultAuth(),
    ),
  );
  assert.ok(reason, "must not be ready");
  assert.match(reason, /does not chain/);
  assert.match(reason, /orphan/, "names the certificate");
});

test("policy missing the KV path: not ready, naming the path and the capability", async () => {
  const other = await approleLogin(fx, "kv-unprivileged", ["nothing"]);
  const config = serverConfig(
    fx,
    "kv-no-policy",
    { type: "vault-kv", certificate: `${REF}#certificate`, privateKey: `${REF}#privateKey` },
    approleVault(other),
  );
  const reason = await cas.notReadyReason(config);
  assert.ok(reason, "must not be ready");
  assert.match(reason, /"read" capability on "secret\/data\/pki\/istiod"/);
});

test("Vault stopped: keeps issuing with the loaded CA; polling resumes after restart", async () => {
  const ca = await newCa("kv ca halt");
  await fx.admin.write("secret/data/pki/istiod", { data: ca });
  const { client, server, kv } = await start("kv-halt", {
    certificate: `${REF}#certificate`,
    privateKey: `${REF}#privateKey`,
    root: `${REF}#root`,
    pollInterval: 1,
  });
  const token = await fx.token("default", "sleep");
  const failedBefore = kv.failedPolls();
  await fx.bao.halt();
  try {
    // Anchored on the authority's own event: a poll that found Vault down (not a sleep).
    await waitFor("a poll that finds Vault stopped", async () => kv.failedPolls() > failedBefore);
    for (let i = 0; i < 3; i++) verify(await client.create(csr, { token }), ca.certificate);
    assert.equal(server.authority.ready().ready, true);
  } finally {
    await fx.bao.start();
  }
  const next = await newCa("kv ca after restart");
  await fx.admin.write("secret/data/pki/istiod", { data: next });
  await eventually(async () => verify(await client.create(csr, { token }), next.certificate), 15_000);
});
