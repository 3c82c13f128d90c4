// `meshvault vault setup` against a real OpenBao dev server: each mode set up
// with the root token, the result read back through the HTTP API, and the
// created credentials used the way the server uses them.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SignJWT, exportSPKI, generateKeyPair } from "jose";
import { buildProgram } from "../../src/cli/main.js";
import { buildCsr } from "../../src/pki/csr.js";
import { generateKeyPairFor } from "../../src/pki/keys.js";
import {
  AppRoleAuth,
  VaultBadRequestError,
  VaultClient,
  VaultPermissionDeniedError,
  loginWithJwt,
} from "../../src/vault/index.js";
import {
  renderPolicy,
  runSetup,
  serverAccess,
  type RunReport,
  type SetupFlags,
} from "../../src/vault/setup/index.js";
import { EC_P256_KEY, RSA_2048_KEY, openssl, opensslSelfSigned } from "../helpers/openssl.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";

let bao: OpenBao;
let root: VaultClient;
let dir: string;

before(async () => {
  bao = await startOpenBao();
  root = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  dir = await mkdtemp(join(tmpdir(), "meshvault-setup-test-"));
});
after(async () => {
  root?.close();
  await bao?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function setup(flags: SetupFlags): Promise<{ report: RunReport; out: string }> {
  const lines: string[] = [];
  const report = await runSetup({
    flags,
    env: { VAULT_ADDR: bao.addr, VAULT_TOKEN: bao.rootToken },
    out: (l) => lines.push(l),
  });
  assert.ok(report, "a real run returns a report");
  const out = lines.join("\n");
  assert.equal(report.failed, false, out);
  assert.ok(!out.includes(bao.rootToken), "the admin token is never printed");
  return { report, out };
}

function data<T>(r: { data?: T | null } | null): T {
  assert.ok(r?.data, "expected data");
  return r.data;
}

function spiffeCsr(uri: string): string {
  return buildCsr(generateKeyPairFor("ec-p256").privateKey, { uris: [uri] });
}

describe("--dry-run", () => {
  test("prints the vault commands through the CLI and opens no connection", async () => {
    const connections: Socket[] = [];
    const trap: Server = createServer((s) => {
      connections.push(s);
      s.destroy();
    });
    await new Promise<void>((r) => trap.listen(0, "127.0.0.1", () => r()));
    const port = (trap.address() as { port: number }).port;
    const printed: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string | Uint8Array) => {
      printed.push(String(chunk));
      return true;
    }) as typeof process.stdout.write;
    try {
      await (
        await buildProgram()
      ).parseAsync([
        "node",
        "meshvault",
        "vault",
        "setup",
        "--mode",
        "vault-sign",
        "--address",
        `http://127.0.0.1:${port}`,
        "--auth",
        "approle",
        "--secret-id-file",
        join(dir, "never-written"),
        "--dry-run",
      ]);
    } finally {
      process.stdout.write = write;
      await new Promise<void>((r) => trap.close(() => r()));
    }
    const out = printed.join("");
    for (const want of [
      "vault secrets enable -path=pki pki",
      "vault secrets tune -max-lease-ttl=87600h pki",
      "vault write pki/root/generate/internal common_name=",
      "vault secrets enable -path=pki_int pki",
      "pki/root/sign-intermediate csr=@pki_int.csr",
      "vault write pki_int/intermediate/set-signed certificate=@pki_int.pem",
      "vault write pki_int/roles/meshvault-workload allowed_uri_sans='spiffe://cluster.local/*'",
      "require_cn=false use_csr_common_name=false use_csr_sans=false key_type=any",
      "no_store=true max_ttl=2160h",
      "vault policy write meshvault-sign - <<'EOF'",
      'path "pki_int/sign/meshvault-workload" {',
      "vault auth enable -path=approle approle",
      "vault write auth/approle/role/meshvault token_policies=meshvault-sign",
      "vault write -f -field=secret_id auth/approle/role/meshvault/secret-id",
    ]) {
      assert.ok(out.includes(want), `dry-run output lacks ${JSON.stringify(want)}:\n${out}`);
    }
    assert.equal(connections.length, 0, "dry-run must not contact Vault");
    assert.equal(process.exitCode ?? 0, 0);
  });
});

describe("vault-sign with approle (seeds 000 + 002)", () => {
  const flags = (): SetupFlags => ({
    mode: "vault-sign",
    auth: "approle",
    secretIdFile: join(dir, "sign.secret-id"),
    roleIdFile: join(dir, "sign.role-id"),
  });

  test("creates mounts, root, intermediate, role, policy and approle; the credentials sign SPIFFE IDs only", async () => {
    const { report, out } = await setup(flags());
    assert.ok(report.changes >= 10, out);
    assert.ok(
      report.steps.every((s) => s.outcome === "created"),
      out,
    );

    const mounts = data(await root.read<Record<string, { type: string }>>("sys/mounts"));
    assert.equal(mounts["pki/"]?.type, "pki");
    assert.equal(mounts["pki_int/"]?.type, "pki");
    assert.equal(
      data(await root.read<{ max_lease_ttl: number }>("sys/mounts/pki/tune")).max_lease_ttl,
      87600 * 3600,
    );
    assert.equal(
      data(await root.read<{ max_lease_ttl: number }>("sys/mounts/pki_int/tune")).max_lease_ttl,
      43800 * 3600,
    );

    const role = data(await root.read<Record<string, unknown>>("pki_int/roles/meshvault-workload"));
    assert.deepEqual(role["allowed_uri_sans"], ["spiffe://cluster.local/*"]);
    assert.equal(role["require_cn"], false);
    assert.equal(role["use_csr_common_name"], false);
    assert.equal(role["use_csr_sans"], false);
    assert.equal(role["no_store"], true);
    assert.equal(role["key_type"], "any");
    // keyEncipherment is for RSA keys only (RFC 8813) and the role serves every key type.
    assert.deepEqual(role["key_usage"], ["DigitalSignature"]);
    assert.deepEqual(role["ext_key_usage"], ["ServerAuth", "ClientAuth"]);
    assert.equal(role["max_ttl"], 90 * 86400);
    assert.deepEqual(role["allowed_domains"], [
      "istiod.istio-system.svc",
      "meshvault.istio-system.svc",
      "localhost",
    ]);

    const policy = data(await root.read<{ policy: string }>("sys/policies/acl/meshvault-sign")).policy;
    const authority = {
      type: "vault-sign",
      mount: "pki_int",
      role: "meshvault-workload",
      identity: "server",
      excludeCnFromSans: true,
    } as const;
    assert.equal(policy, renderPolicy("meshvault-sign", "vault-sign", serverAccess(authority)));
    assert.match(policy, /path "pki_int\/sign\/meshvault-workload" \{\n {2}capabilities = \["update"\]/);
    assert.doesNotMatch(policy, /\*"/, "no wildcard paths");

    const approle = data(await root.read<{ token_policies: string[] }>("auth/approle/role/meshvault"));
    assert.deepEqual(approle.token_policies, ["meshvault-sign"]);
    const roleId = data(await root.read<{ role_id: string }>("auth/approle/role/meshvault/role-id")).role_id;
    assert.ok(out.includes(`role_id: ${roleId}`), "role_id is printed");
    assert.equal(readFileSync(flags().roleIdFile!, "utf8").trim(), roleId);
    assert.equal(statSync(flags().secretIdFile!).mode & 0o777, 0o600);
    const secretId = readFileSync(flags().secretIdFile!, "utf8").trim();
    assert.ok(!out.includes(secretId), "the secret_id is never printed");
    assert.ok(out.includes(flags().secretIdFile!), "says where the secret_id went");

    // Log in like the server: role_id + secret_id file.
    const login = await new AppRoleAuth({ roleId, secretIdFile: flags().secretIdFile }).login(root);
    assert.ok(login.policies.includes("meshvault-sign"));
    const id = "spiffe://cluster.local/ns/default/sa/sleep";
    const signed = data(
      await root.write<{ certificate: string; ca_chain: string[] }>(
        "pki_int/sign/meshvault-workload",
        { csr: spiffeCsr(id), uri_sans: id, ttl: "1h", exclude_cn_from_sans: true },
        { token: login.token },
      ),
    );
    const leaf = new X509Certificate(signed.certificate);
    assert.ok(leaf.subjectAltName?.includes(`URI:${id}`));
    const rootPem = (await root.requestRaw("GET", "pki/ca/pem", undefined, { noAuth: true })).body;
    const intPem = (await root.requestRaw("GET", "pki_int/ca/pem", undefined, { noAuth: true })).body;
    assert.ok(leaf.verify(new X509Certificate(intPem).publicKey));
    assert.ok(new X509Certificate(intPem).verify(new X509Certificate(rootPem).publicKey));
    await assert.rejects(
      root.write(
        "pki_int/sign/meshvault-workload",
        { csr: spiffeCsr("spiffe://evil.example/ns/a/sa/b"), uri_sans: "spiffe://evil.example/ns/a/sa/b" },
        { token: login.token, maxAttempts: 1 },
      ),
      (e: unknown) => e instanceof VaultBadRequestError && /uri|URI/.test(e.message),
    );
    // Least privilege: nothing beyond the mode's paths.
    await assert.rejects(
      root.write(
        "pki/root/sign-intermediate",
        { csr: spiffeCsr(id) },
        { token: login.token, maxAttempts: 1 },
      ),
      VaultPermissionDeniedError,
    );
  });

  test("a second run changes nothing and keeps the secret_id", async () => {
    const before = readFileSync(flags().secretIdFile!, "utf8");
    const { report, out } = await setup(flags());
    assert.equal(report.changes, 0, out);
    assert.ok(
      report.steps.every((s) => s.outcome === "unchanged"),
      out,
    );
    assert.match(out, /nothing to change/);
    assert.match(out, /ok \(unchanged\)/);
    assert.match(out, /role_id: /);
    assert.equal(readFileSync(flags().secretIdFile!, "utf8"), before);
  });

  test("a drifted role is updated; --new-secret-id rotates and destroys the old secret_id", async () => {
    await root.write("pki_int/roles/meshvault-workload", { allowed_uri_sans: ["*"], allow_any_name: true });
    const oldSecret = readFileSync(flags().secretIdFile!, "utf8").trim();
    const { report, out } = await setup({ ...flags(), newSecretId: true });
    assert.equal(report.changes, 2, out);
    assert.match(
      out,
      /updated\s+workload role pki_int\/roles\/meshvault-workload.*allowed_uri_sans: \[\*\] -> \[spiffe:\/\/cluster\.local\/\*\]/,
    );
    assert.match(out, /updated\s+approle secret_id/);
    assert.match(out, /previous secret_id was destroyed/);
    const role = data(await root.read<Record<string, unknown>>("pki_int/roles/meshvault-workload"));
    assert.deepEqual(role["allowed_uri_sans"], ["spiffe://cluster.local/*"]);
    const roleId = readFileSync(flags().roleIdFile!, "utf8").trim();
    const lookup = await root.write("auth/approle/role/meshvault/secret-id/lookup", { secret_id: oldSecret });
    assert.equal(lookup, null, "old secret_id no longer exists");
    await new AppRoleAuth({ roleId, secretIdFile: flags().secretIdFile }).login(root);
  });
});

describe("vault-intermediate exported with an imported openssl root (seed 003)", () => {
  test("imports the root, enables both mounts, kubernetes auth; the policy allows exactly the exported flow", async () => {
    const key = join(dir, "root-key.pem");
    const cert = join(dir, "root-cert.pem");
    opensslSelfSigned({
      keyArgs: RSA_2048_KEY,
      days: 3650,
      subj: "/O=my-org",
      cert,
      key,
      extra: ["-sha256"],
    });
    const bundle = join(dir, "bundle.pem");
    await writeFile(bundle, readFileSync(key, "utf8") + readFileSync(cert, "utf8"));
    const kubeCa = join(dir, "kube-ca.pem");
    await writeFile(kubeCa, readFileSync(cert, "utf8"));
    const flags: SetupFlags = {
      mode: "vault-intermediate",
      intermediateMode: "exported",
      rootMount: "pki_imp",
      intermediateMount: "pki_imp_int",
      importRoot: bundle,
      auth: "kubernetes",
      authRole: "gen-int-ca-istio",
      kubernetesHost: "https://127.0.0.1:6443",
      kubernetesCaCert: kubeCa,
      boundSaNames: ["istiod-service-account"],
    };
    const { out } = await setup(flags);
    assert.match(out, /created\s+root CA at pki_imp\/ imported/);

    const have = (await root.requestRaw("GET", "pki_imp/ca/pem", undefined, { noAuth: true })).body;
    assert.equal(
      new X509Certificate(have).fingerprint256,
      new X509Certificate(readFileSync(cert)).fingerprint256,
    );
    const mounts = data(await root.read<Record<string, { type: string }>>("sys/mounts"));
    assert.equal(mounts["pki_imp_int/"]?.type, "pki");
    const policy = data(
      await root.read<{ policy: string }>("sys/policies/acl/meshvault-intermediate"),
    ).policy;
    for (const p of [
      "pki_imp/root/sign-intermediate",
      "pki_imp_int/intermediate/generate/exported",
      "pki_imp_int/intermediate/set-signed",
    ]) {
      assert.ok(
        policy.includes(`path "${p}" {\n  capabilities = ["update"]`),
        `policy lacks ${p}:\n${policy}`,
      );
    }
    const kcfg = data(await root.read<Record<string, unknown>>("auth/kubernetes/config"));
    assert.equal(kcfg["kubernetes_host"], "https://127.0.0.1:6443");
    const krole = data(await root.read<Record<string, unknown>>("auth/kubernetes/role/gen-int-ca-istio"));
    assert.deepEqual(krole["bound_service_account_names"], ["istiod-service-account"]);
    assert.deepEqual(krole["bound_service_account_namespaces"], ["istio-system"]);
    assert.deepEqual(krole["token_policies"], ["meshvault-intermediate"]);

    const again = await setup(flags);
    assert.equal(again.report.changes, 0, again.out);
    assert.match(again.out, /nothing to change/);

    // A different root in the same mount is refused, never replaced.
    const key2 = join(dir, "other-key.pem");
    const cert2 = join(dir, "other-cert.pem");
    opensslSelfSigned({ keyArgs: EC_P256_KEY, days: 30, subj: "/O=other", cert: cert2, key: key2 });
    const bundle2 = join(dir, "bundle2.pem");
    await writeFile(bundle2, readFileSync(key2, "utf8") + readFileSync(cert2, "utf8"));
    const lines: string[] = [];
    const r = await runSetup({
      flags: { ...flags, importRoot: bundle2 },
      env: { VAULT_ADDR: bao.addr, VAULT_TOKEN: bao.rootToken },
      out: (l) => lines.push(l),
    });
    assert.equal(r?.failed, true);
    assert.match(
      lines.join("\n"),
      /FAIL\s+root CA at pki_imp\/.*\n.*already has a different root CA.*never replaces a root/,
    );
  });

  test("csr mode with approle: the created credentials can have the root sign an intermediate", async () => {
    const flags: SetupFlags = {
      mode: "vault-intermediate",
      rootMount: "pki_csr",
      auth: "approle",
      authRole: "meshvault-int",
      secretIdFile: join(dir, "int.secret-id"),
      roleIdFile: join(dir, "int.role-id"),
    };
    await setup(flags);
    const login = await new AppRoleAuth({
      roleIdFile: flags.roleIdFile,
      secretIdFile: flags.secretIdFile,
    }).login(root);
    const csr = buildCsr(generateKeyPairFor("ec-p256").privateKey, {
      subject: { commonName: "istiod-ca" },
      ca: true,
    });
    const r = data(
      await root.write<{ certificate: string }>(
        "pki_csr/root/sign-intermediate",
        {
          csr,
          common_name: "istiod-ca",
          ttl: "720h",
          uri_sans: "spiffe://cluster.local",
          max_path_length: 0,
        },
        { token: login.token },
      ),
    );
    assert.ok(new X509Certificate(r.certificate).ca);
    assert.equal((await setup(flags)).report.changes, 0);
  });
});

describe("vault-kv with jwt auth (seed 001)", () => {
  test("writes the CA pair to KV; a jwt login reads it; changed files update, unchanged files do not", async () => {
    const key = join(dir, "ca-key.pem");
    const cert = join(dir, "ca-cert.pem");
    opensslSelfSigned({ keyArgs: EC_P256_KEY, days: 365, subj: "/O=cluster.local/CN=istiod-ca", cert, key });
    const { privateKey, publicKey } = await generateKeyPair("ES256");
    const pubFile = join(dir, "jwt-pub.pem");
    await writeFile(pubFile, await exportSPKI(publicKey));
    const flags: SetupFlags = {
      mode: "vault-kv",
      caCert: cert,
      caKey: key,
      auth: "jwt",
      authRole: "istiod",
      jwtPublicKey: [pubFile],
      boundIssuer: "https://issuer.test",
      audience: "vault",
      boundSubject: "system:serviceaccount:istio-system:istiod",
    };
    const { out } = await setup(flags);
    assert.match(out, /created\s+KV secret secret\/pki\/istiod/);
    const kv = data(
      await root.read<{ data: Record<string, string>; metadata: { version: number } }>(
        "secret/data/pki/istiod",
      ),
    );
    assert.equal(kv.data["certificate"], readFileSync(cert, "utf8"));
    assert.equal(kv.data["privateKey"], readFileSync(key, "utf8"));
    const jrole = data(await root.read<Record<string, unknown>>("auth/jwt/role/istiod"));
    assert.equal(jrole["role_type"], "jwt");
    assert.equal(jrole["user_claim"], "sub");
    assert.deepEqual(jrole["bound_audiences"], ["vault"]);
    assert.deepEqual(jrole["token_policies"], ["meshvault-kv"]);

    const jwt = await new SignJWT({})
      .setProtectedHeader({ alg: "ES256" })
      .setIssuer("https://issuer.test")
      .setAudience("vault")
      .setSubject("system:serviceaccount:istio-system:istiod")
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(privateKey);
    const login = await loginWithJwt(root, "jwt", "istiod", jwt);
    const read = data(
      await root.read<{ data: Record<string, string> }>("secret/data/pki/istiod", { token: login.token }),
    );
    assert.equal(read.data["certificate"], readFileSync(cert, "utf8"));
    await assert.rejects(
      root.read("secret/data/other", { token: login.token, maxAttempts: 1 }),
      VaultPermissionDeniedError,
    );

    const again = await setup(flags);
    assert.equal(again.report.changes, 0, again.out);

    // A key that does not match the certificate is refused before anything is written.
    const otherKey = join(dir, "other.key");
    openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", otherKey]);
    const lines: string[] = [];
    const bad = await runSetup({
      flags: { ...flags, caKey: otherKey },
      env: { VAULT_ADDR: bao.addr, VAULT_TOKEN: bao.rootToken },
      out: (l) => lines.push(l),
    });
    assert.equal(bad?.failed, true);
    assert.match(lines.join("\n"), /--ca-key does not belong to --ca-cert/);
    assert.ok(!lines.join("\n").includes("PRIVATE KEY"), "never prints key material");
    const v = data(await root.read<{ metadata: { version: number } }>("secret/data/pki/istiod")).metadata
      .version;
    assert.equal(v, kv.metadata.version, "nothing written");
  });
});
