// vault-intermediate (seeds 002 and 003) end to end on a real OpenBao: the intermediate
// is signed by Vault's root mount, leaves are signed in meshvault, openssl verifies them
// against Vault's root. Renewal with a short TTL under load, Vault stopped while issuing,
// and a policy missing the sign-intermediate path.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { CaServerHandle } from "../../src/server/run.js";
import { parseCertificate, parseCertificates } from "../../src/pki/certificate.js";
import type { CaClient } from "../helpers/ca-client.js";
import { opensslCsr, opensslVerify } from "../helpers/openssl.js";
import {
  TD,
  CaServers,
  approleLogin,
  approleVault,
  jwtRole,
  serverConfig,
  setupPki,
  startVaultFixture,
  writePolicy,
  type VaultFixture,
} from "./vault-fixture.js";
import { delay, within } from "../helpers/wait.js";

let fx: VaultFixture;
let rootPem: string;
let approle: Awaited<ReturnType<typeof approleLogin>>;
const cas = new CaServers();
const csr = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "/O=").csrPem;
const SLEEP = `spiffe://${TD}/ns/default/sa/sleep`;

before(async () => {
  fx = await startVaultFixture(true);
  ({ rootPem } = await setupPki(fx.admin));
  // Least privilege per mode, as `meshvault vault setup` would write it.
  await writePolicy(fx.admin, "int-csr", { "pki/root/sign-intermediate": ["update"] });
  await writePolicy(fx.admin, "int-exported", {
    "pki/root/sign-intermediate": ["update"],
    "pki_int/intermediate/generate/exported": ["update"],
    "pki_int/intermediate/set-signed": ["update"],
  });
  await writePolicy(fx.admin, "nothing", { "secret/data/unrelated": ["read"] });
  approle = await approleLogin(fx, "meshvault-int", ["int-csr"]);
  // The server itself logs in with a JWT from a file in exported mode.
  await jwtRole(fx, "meshvault-server", ["int-exported"], ["system:serviceaccount:istio-system:meshvault"]);
});

after(async () => {
  await cas.close();
  await fx?.close();
});

async function start(
  name: string,
  authority: Record<string, unknown>,
  vault: Record<string, unknown> = approleVault(approle),
): Promise<{ server: CaServerHandle; client: CaClient }> {
  return cas.start(serverConfig(fx, name, { type: "vault-intermediate", ...authority }, vault));
}

function verifyAgainstVaultRoot(chain: string[]): void {
  assert.equal(chain.at(-1), rootPem, "trust bundle is Vault's root");
  assert.deepEqual(parseCertificate(chain[0]!).sans.uris, [SLEEP]);
  const [ok, out] = opensslVerify(rootPem, chain.slice(1, -1).join(""), chain[0]!, "sslclient");
  assert.ok(ok, out);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

test("mode csr (approle): intermediate from pki/root/sign-intermediate, pathLen 0, SPIFFE trust-domain ID; key never written", async () => {
  const { client } = await start("csr", { mode: "csr" });
  const chain = await client.create(csr, { token: await fx.token("default", "sleep") });
  assert.equal(chain.length, 3, "leaf, our intermediate, Vault's root");
  verifyAgainstVaultRoot(chain);
  const int = parseCertificate(chain[1]!);
  assert.equal(int.isCa, true);
  assert.equal(int.pathLen, 0);
  assert.deepEqual(int.sans.uris, [`spiffe://${TD}`]);
  assert.match(int.subject.map((a) => a.value).join(","), /meshvault intermediate CA \(cluster\.local\)/);
  const lifetime = (int.notAfter.getTime() - Date.now()) / 3600_000;
  assert.ok(lifetime > 719 && lifetime <= 720, `default ttl 720h (${lifetime}h)`);
  for (const f of filesUnder(join(fx.dir, "data-csr")))
    assert.doesNotMatch(readFileSync(f, "utf8"), /PRIVATE KEY/, `${f} holds a private key`);
});

test("mode exported (jwt login): Vault generates the key, pki_int holds the signed intermediate too", async () => {
  const { writeFileSync } = await import("node:fs");
  const tokenFile = join(fx.dir, "server.jwt");
  writeFileSync(tokenFile, await fx.token("istio-system", "meshvault"), { mode: 0o600 });
  const { client } = await start(
    "exported",
    { mode: "exported", keyAlgorithm: "ec-p384", ttl: "48h" },
    { auth: { method: "jwt", role: "meshvault-server", tokenFile } },
  );
  const chain = await client.create(csr, { token: await fx.token("default", "sleep") });
  verifyAgainstVaultRoot(chain);
  const int = parseCertificate(chain[1]!);
  assert.equal(int.publicKey.asymmetricKeyDetails?.namedCurve, "secp384r1");
  // set-signed: the intermediate mount knows the certificate meshvault signs with.
  const ids = await fx.admin.list("pki_int/issuers");
  const certs: string[] = [];
  for (const id of ids) {
    const r = await fx.admin.read<{ certificate: string }>(`pki_int/issuer/${id}/json`);
    certs.push(r!.data!.certificate.trim());
  }
  assert.ok(certs.includes(chain[1]!.trim()), "pki_int/issuers lists the intermediate");
});

test("renewal: a new intermediate is swapped in at renewAt while CreateCertificate keeps succeeding", async () => {
  // ttl 20s, renewAt 0.1: the first renewal is due about 2 s after start.
  const { client } = await start("renew", { mode: "csr", ttl: "20s", renewAt: 0.1 });
  const token = await fx.token("default", "sleep");
  let first: string | undefined;
  let calls = 0;
  let stop = false;
  // Several callers at once, so some requests are in flight when the swap happens; each one
  // goes on until a chain from the renewed intermediate reaches it. Any failure fails the test.
  const caller = async (): Promise<void> => {
    while (!stop) {
      const chain = await client.create(csr, { token });
      verifyAgainstVaultRoot(chain);
      calls++;
      const serial = parseCertificate(chain[1]!).serialHex;
      first ??= serial;
      if (serial !== first) return;
      await delay(50); // pacing only: four callers need not saturate the CPU
    }
  };
  try {
    await within(
      "every caller to be served by the renewed intermediate",
      Promise.all([1, 2, 3, 4].map(caller)),
      30_000,
    );
  } finally {
    stop = true;
  }
  assert.ok(calls > 4, `callers were served before and after the swap (${calls} calls)`);
});

test("Vault stopped: keeps issuing from the intermediate in memory; fine again after restart", async () => {
  const { client, server } = await start("halt", { mode: "csr" });
  const token = await fx.token("default", "sleep");
  await client.create(csr, { token });
  await fx.bao.halt();
  try {
    for (let i = 0; i < 5; i++) verifyAgainstVaultRoot(await client.create(csr, { token }));
    assert.equal(server.authority.ready().ready, true);
  } finally {
    await fx.bao.start();
  }
  verifyAgainstVaultRoot(await client.create(csr, { token }));
});

test("policy missing pki/root/sign-intermediate: not ready, naming the path and the capability", async () => {
  const other = await approleLogin(fx, "int-unprivileged", ["nothing"]);
  const reason = await cas.notReadyReason(
    serverConfig(fx, "int-no-policy", { type: "vault-intermediate" }, approleVault(other)),
  );
  assert.ok(reason, "must not be ready");
  assert.match(reason, /"update" capability on "pki\/root\/sign-intermediate"/);
  assert.equal(parseCertificates(rootPem).length, 1);
});

test("wrong rootMount: not ready, naming authority.rootMount as missing (not a missing policy)", async () => {
  const reason = await cas.notReadyReason(
    serverConfig(
      fx,
      "int-wrong-mount",
      { type: "vault-intermediate", rootMount: "pki_typo" },
      approleVault(approle),
    ),
  );
  assert.ok(reason, "must not be ready");
  assert.match(reason, /no PKI secrets engine is mounted at "pki_typo" \(authority\.rootMount\)/);
  assert.match(reason, /Set authority\.rootMount to the mount that holds the CA \(bao secrets list\)/);
  assert.doesNotMatch(reason, /capabilit|policy|policies/);
});

test("wrong role_id: not ready, naming the role_id file (not the secret_id)", async () => {
  const own = await approleLogin(fx, "int-wrong-role", ["int-csr"]);
  const roleIdFile = join(fx.dir, "int-wrong-role.bad-role-id");
  writeFileSync(roleIdFile, "11111111-2222-3333-4444-555555555555", { mode: 0o600 });
  const reason = await cas.notReadyReason(
    serverConfig(fx, "int-wrong-role", { type: "vault-intermediate" }, approleVault({ ...own, roleIdFile })),
  );
  assert.ok(reason, "must not be ready");
  assert.match(reason, new RegExp(`The role_id is not accepted: check the role_id in ${roleIdFile}`));
  assert.doesNotMatch(reason, /secret_id in|secret_id is not accepted/);
  assert.doesNotMatch(reason, /11111111-2222/, "no credential shown");
});
