// vault-sign (seed 000) end to end on a real OpenBao: CA server -> CreateCertificate over
// gRPC -> Vault signs -> openssl verifies against Vault's root. Both identity modes, and
// Vault misbehaving: wrong secret_id, missing policy, sealed, stopped and restarted.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import type { CaServerHandle } from "../../src/server/run.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { decodePem, encodePem } from "../../src/pki/pem.js";
import { WorkloadTokenCache } from "../../src/authority/vault/index.js";
import { VaultClient } from "../../src/vault/index.js";
import { readFileSync, writeFileSync } from "node:fs";
import type { CaClient } from "../helpers/ca-client.js";
import { waitFor } from "../helpers/wait.js";
import { opensslCsr, opensslVerify } from "../helpers/openssl.js";
import {
  ROLE,
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

let fx: VaultFixture;
let rootPem: string;
let approle: Awaited<ReturnType<typeof approleLogin>>;
const cas = new CaServers();

const ecCsr = () => opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "/O=");
const rsaCsr = () => opensslCsr(["-newkey", "rsa:2048"], "/O=");
const SIGN_PATH = `pki_int/sign/${ROLE}`;

before(async () => {
  fx = await startVaultFixture(true);
  ({ rootPem } = await setupPki(fx.admin));
  await writePolicy(fx.admin, "meshvault-sign", {
    [SIGN_PATH]: ["update"],
    [`${SIGN_PATH}-serving`]: ["update"],
  });
  await writePolicy(fx.admin, "meshvault-nothing", { "secret/data/unrelated": ["read"] });
  approle = await approleLogin(fx, "meshvault", ["meshvault-sign"]);
  await jwtRole(fx, "workloads", ["meshvault-sign"], ["system:serviceaccount:default:sleep"]);
  await jwtRole(fx, "no-sign", ["meshvault-nothing"], ["system:serviceaccount:default:sleep"]);
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
  return cas.start(serverConfig(fx, name, authority, vault));
}

function verifyAgainstVaultRoot(chain: string[], id: string): void {
  assert.equal(chain.at(-1), rootPem, "trust bundle is Vault's root");
  const leaf = parseCertificate(chain[0]!);
  assert.deepEqual(leaf.sans.uris, [id]);
  assert.equal(leaf.isCa, false);
  for (const purpose of ["sslclient", "sslserver"]) {
    // Verified against the root read from Vault by the admin, not the one the server passed on.
    const [ok, out] = opensslVerify(rootPem, chain.slice(1, -1).join(""), chain[0]!, purpose);
    assert.ok(ok, `${purpose}: ${out}`);
  }
}

async function grpcError(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  assert.fail("expected the call to fail");
}

test("identity server (approle): Vault signs RSA and EC CSRs; openssl verifies against Vault's root", async () => {
  const { server, client } = await start("server-id", { type: "vault-sign" });
  assert.equal(server.rootsPem(), rootPem);
  for (const make of [ecCsr, rsaCsr]) {
    const chain = await client.create(make().csrPem, {
      token: await fx.token("default", "sleep"),
      validity: 3600,
    });
    assert.equal(chain.length, 3, "leaf, pki_int's intermediate, root");
    verifyAgainstVaultRoot(chain, `spiffe://${TD}/ns/default/sa/sleep`);
    const leaf = parseCertificate(chain[0]!);
    const lifetime = (leaf.notAfter.getTime() - Date.now()) / 1000;
    assert.ok(lifetime > 3500 && lifetime <= 3600 + 5, `ttl passed to Vault (${lifetime}s)`);
  }
});

test("a CSR whose signature does not verify: Vault refuses it (proof of possession is checked where it is signed) -> INVALID_ARGUMENT, and the server stays ready", async () => {
  const { server, client } = await start("bad-csr-signature", { type: "vault-sign" });
  const der = decodePem(ecCsr().csrPem)[0]!.der;
  der[der.length - 1]! ^= 1; // the signature's last byte: the CSR still decodes
  const err = await grpcError(
    client.create(encodePem("CERTIFICATE REQUEST", der), { token: await fx.token("default", "sleep") }),
  );
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT, err.message);
  assert.match(err.message, /CSR signature does not verify/);
  assert.match(err.message, /request signature invalid/, "Vault's own reason is named");
  assert.equal(server.authority.ready().ready, true, "a bad CSR says nothing about Vault");
  // The same server still signs a good CSR: the refusal was about that request only.
  const chain = await client.create(ecCsr().csrPem, { token: await fx.token("default", "sleep") });
  verifyAgainstVaultRoot(chain, `spiffe://${TD}/ns/default/sa/sleep`);
});

test("identity workload (jwt): each caller logs in to Vault with its own token; Vault's role decides", async () => {
  const { client } = await start("workload-id", {
    type: "vault-sign",
    identity: "workload",
    workloadAuth: { method: "jwt", role: "workloads" },
  });
  const chain = await client.create(ecCsr().csrPem, { token: await fx.token("default", "sleep") });
  verifyAgainstVaultRoot(chain, `spiffe://${TD}/ns/default/sa/sleep`);

  // meshvault accepts the intruder's token, but Vault's role is not bound to it.
  const err = await grpcError(
    client.create(ecCsr().csrPem, { token: await fx.token("default", "intruder") }),
  );
  assert.equal(err.code, grpc.status.PERMISSION_DENIED, err.message);
  assert.match(err.message, /role "workloads"/);
  assert.match(err.message, /auth\/jwt/);
  assert.doesNotMatch(err.message, /eyJ/, "no JWT in the message");
});

test("identity workload: a workload role whose policy lacks the sign path is PERMISSION_DENIED naming path and capability", async () => {
  const { client } = await start("workload-no-sign", {
    type: "vault-sign",
    identity: "workload",
    workloadAuth: { method: "jwt", role: "no-sign" },
  });
  const err = await grpcError(client.create(ecCsr().csrPem, { token: await fx.token("default", "sleep") }));
  assert.equal(err.code, grpc.status.PERMISSION_DENIED, err.message);
  assert.match(err.message, new RegExp(`${SIGN_PATH}.*"update"`));
});

test("workload Vault tokens are cached per caller token until the lease ends", async () => {
  const client = new VaultClient({ address: fx.bao.addr, skipVerify: false });
  const cache = new WorkloadTokenCache(client, {
    method: "jwt",
    mount: "jwt",
    role: "workloads",
    maxEntries: 2,
  });
  const id = `spiffe://${TD}/ns/default/sa/sleep`;
  const jwt = await fx.token("default", "sleep");
  const [a, b] = await Promise.all([cache.token(id, jwt), cache.token(id, jwt)]);
  assert.equal(a, b);
  assert.equal(await cache.token(id, jwt), a);
  assert.equal(cache.stats().logins, 1, "concurrent and repeated calls share one login");
  for (let i = 0; i < 3; i++) await cache.token(id, await fx.token("default", "sleep").then((t) => `${t}`));
  assert.ok(cache.stats().cached <= 2, "bounded");
  client.close();
});

test("wrong secret_id: the server stays up not ready, saying which login and what to check, without the secret", async () => {
  // Its own role: Vault locks a role_id out after 5 failed logins, which would refuse the
  // shared role's good secret_id in the tests after this one.
  const own = await approleLogin(fx, "meshvault-wrong-secret", ["meshvault-sign"]);
  const wrong = await cas.notReadyReason(
    serverConfig(fx, "wrong-secret", { type: "vault-sign" }, approleVault(own, own.wrongSecretIdFile)),
  );
  assert.ok(wrong, "must not be ready");
  assert.match(wrong, /approle login at auth\/approle\/login/);
  assert.match(wrong, /secret_id/);
  assert.doesNotMatch(wrong, /00000000-1111/);
});

test("policy missing the sign path: not ready, naming the path and the capability", async () => {
  const other = await approleLogin(fx, "meshvault-unprivileged", ["meshvault-nothing"]);
  const reason = await cas.notReadyReason(
    serverConfig(fx, "no-policy", { type: "vault-sign" }, approleVault(other)),
  );
  assert.ok(reason, "must not be ready");
  assert.match(reason, new RegExp(`"update" capability on "${SIGN_PATH}"`));
  assert.match(reason, /path ".*" \{ capabilities = \["update"\] \}/);
});

test("wrong mount: not ready, naming authority.mount as missing (not a missing policy)", async () => {
  const reason = await cas.notReadyReason(
    serverConfig(fx, "wrong-mount", { type: "vault-sign", mount: "pki_typo" }, approleVault(approle)),
  );
  assert.ok(reason, "must not be ready");
  assert.match(reason, /no PKI secrets engine is mounted at "pki_typo" \(authority\.mount\)/);
  assert.match(reason, /bao secrets list/);
  assert.doesNotMatch(reason, /capabilit/);
});

/** Waits until the server's readiness is `ready`, returning the reason when not ready. */
function readinessBecomes(server: CaServerHandle, ready: boolean, reason?: RegExp): Promise<string> {
  return waitFor(`readiness ${ready ? "ready" : `not ready (${String(reason)})`}`, async () => {
    const r = server.readiness();
    if (r.ready) return ready && "ready";
    return !ready && (!reason || reason.test(r.reason)) && r.reason;
  });
}

test("sealed Vault: not ready and UNAVAILABLE, both saying sealed; ready and signing again after unseal", async () => {
  const { client, server } = await start("sealed", { type: "vault-sign" });
  const token = await fx.token("default", "sleep");
  await client.create(ecCsr().csrPem, { token });
  assert.equal(server.readiness().ready, true);
  await fx.bao.seal();
  try {
    // The probe notices by itself, without a request.
    const reason = await readinessBecomes(server, false, /sealed/);
    assert.match(reason, /unseal it \(bao operator unseal/);
    const err = await grpcError(client.create(ecCsr().csrPem, { token }));
    assert.equal(err.code, grpc.status.UNAVAILABLE, err.message);
    assert.match(err.message, /sealed/);
  } finally {
    await fx.bao.unseal();
  }
  await readinessBecomes(server, true);
  const chain = await client.create(ecCsr().csrPem, { token });
  verifyAgainstVaultRoot(chain, `spiffe://${TD}/ns/default/sa/sleep`);
});

test("revoked login: not ready naming the refused login while it cannot log in again; ready after a new secret_id", async () => {
  const login = await approleLogin(fx, "meshvault-revoked", ["meshvault-sign"]);
  const { client, server } = await start("revoked", { type: "vault-sign" }, approleVault(login));
  const token = await fx.token("default", "sleep");
  await client.create(ecCsr().csrPem, { token });
  // The secret_id is destroyed and every token of the role revoked: no way back in.
  await fx.admin.write("auth/approle/role/meshvault-revoked/secret-id/destroy", {
    secret_id: readFileSync(login.secretIdFile, "utf8").trim(),
  });
  await fx.admin.write("sys/leases/revoke-prefix/auth/approle/login", {});
  const reason = await readinessBecomes(server, false, /approle login/);
  assert.match(reason, /secret_id/);
  const err = await grpcError(client.create(ecCsr().csrPem, { token }));
  assert.equal(err.code, grpc.status.UNAVAILABLE, err.message);
  const fresh = await fx.admin.write<{ secret_id: string }>(
    "auth/approle/role/meshvault-revoked/secret-id",
    {},
  );
  writeFileSync(login.secretIdFile, fresh!.data!.secret_id, { mode: 0o600 });
  await readinessBecomes(server, true);
  verifyAgainstVaultRoot(
    await client.create(ecCsr().csrPem, { token }),
    `spiffe://${TD}/ns/default/sa/sleep`,
  );
});

test("Vault stopped: not ready and UNAVAILABLE; after restart it recovers by itself", async () => {
  const { client, server } = await start("restart", { type: "vault-sign" });
  const token = await fx.token("default", "sleep");
  await client.create(ecCsr().csrPem, { token });
  await fx.bao.halt();
  try {
    // A probe in flight when Vault dies sees a reset; the next one is refused: wait for that.
    await readinessBecomes(server, false, /cannot connect to Vault .*connection refused/);
    const err = await grpcError(client.create(ecCsr().csrPem, { token }));
    assert.equal(err.code, grpc.status.UNAVAILABLE, err.message);
    assert.match(err.message, /cannot connect to Vault|is Vault running and reachable/);
  } finally {
    await fx.bao.start();
  }
  await readinessBecomes(server, true);
  const chain = await client.create(ecCsr().csrPem, { token });
  verifyAgainstVaultRoot(chain, `spiffe://${TD}/ns/default/sa/sleep`);
});
