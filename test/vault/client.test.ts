// The Vault client against a real OpenBao dev server (see test/helpers/openbao.ts).
import { after, before, describe, test } from "node:test";
import { once } from "node:events";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SignJWT, exportSPKI, generateKeyPair } from "jose";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { within } from "../helpers/wait.js";
import { approleCreds as writeApproleCreds, type ApproleCreds } from "../helpers/approle.js";
import {
  APPROLE_REFUSED_RETRY_MS,
  AppRoleAuth,
  TokenAuth,
  VaultAuthError,
  VaultBadRequestError,
  VaultClient,
  VaultConfigError,
  VaultPermissionDeniedError,
  VaultTlsError,
  VaultTokenManager,
  VaultUnavailableError,
  connectVault,
  kvMetadataVersion,
  loginWithJwt,
  parseKvReference,
  readKv,
  readKvField,
  vaultConnectionFromEnv,
  writeKv,
  type VaultConnection,
} from "../../src/vault/index.js";
import { recordingLog } from "../helpers/recording-log.js";

const FAST = { baseDelayMs: 10, maxDelayMs: 50 };

let bao: OpenBao;
let root: VaultClient;
let dir: string;

function conn(extra: Partial<VaultConnection> = {}): VaultConnection {
  return { address: bao.addr, skipVerify: false, auth: { method: "token" }, ...extra };
}

function approleCreds(role: string, body: Record<string, unknown>): Promise<ApproleCreds> {
  return writeApproleCreds(root, dir, role, body);
}

function throwawayCaPem(): string {
  const out = join(dir, "throwaway-ca.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-subj",
      "/CN=throwaway",
      "-days",
      "1",
      "-keyout",
      join(dir, "throwaway-ca.key"),
      "-out",
      out,
    ],
    { stdio: "ignore" },
  );
  return readFileSync(out, "utf8");
}

before(async () => {
  bao = await startOpenBao();
  root = new VaultClient(conn(), { token: bao.rootToken, retry: FAST });
  dir = await mkdtemp(join(tmpdir(), "meshvault-vault-test-"));
  await root.write("sys/policies/acl/app-reader", {
    policy: `path "secret/data/app/*" { capabilities = ["read"] }
path "secret/metadata/app/*" { capabilities = ["read"] }`,
  });
  await root.write("sys/auth/approle", { type: "approle" });
  await writeKv(root, "vault:secret/data/app/db", { password: "s3cr3t-value", user: "app" });
});

after(async () => {
  root?.close();
  await bao?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("configuration from the environment", () => {
  test("BAO_* wins over VAULT_*, the config file wins over both, and conflicts warn", async () => {
    const warnings: string[] = [];
    const warn = (m: string) => warnings.push(m);
    const env = {
      VAULT_ADDR: "http://127.0.0.1:1",
      BAO_ADDR: bao.addr,
      VAULT_TOKEN: bao.rootToken,
      VAULT_NAMESPACE: "",
    };
    const c = vaultConnectionFromEnv(env, {}, { warn });
    assert.equal(c.address, bao.addr);
    assert.equal(c.auth.method, "token");
    assert.ok(
      warnings.some((w) => w.includes("BAO_ADDR") && w.includes("VAULT_ADDR")),
      warnings.join("\n"),
    );
    // The connection built from env really works against OpenBao.
    const v = connectVault(c, { retry: FAST });
    const mounts = await v.client.read("sys/mounts");
    assert.ok(mounts?.data && "secret/" in mounts.data);
    v.close();

    const fromFile = vaultConnectionFromEnv(
      { BAO_ADDR: "http://127.0.0.1:1" },
      { address: bao.addr },
      { warn },
    );
    assert.equal(fromFile.address, bao.addr);

    const tokenWarn: string[] = [];
    vaultConnectionFromEnv(
      { VAULT_TOKEN: "tok-aaaaaaaa", BAO_TOKEN: "tok-bbbbbbbb" },
      {},
      { warn: (m) => tokenWarn.push(m) },
    );
    assert.equal(tokenWarn.length, 1);
    assert.ok(!tokenWarn[0]?.includes("tok-"), "a token conflict warning must not print the tokens");
  });

  test("env selects auth methods and mounts; bad values are named", () => {
    const c = vaultConnectionFromEnv(
      {
        VAULT_ROLE_ID_FILE: "/r",
        VAULT_SECRET_ID_FILE: "/s",
        VAULT_AUTH_PATH: "approle-mesh",
        VAULT_CLIENT_TIMEOUT: "5s",
        VAULT_MAX_RETRIES: "2",
      },
      {},
      { warn: () => {} },
    );
    assert.deepEqual(c.auth, {
      method: "approle",
      mount: "approle-mesh",
      roleId: undefined,
      roleIdFile: "/r",
      secretId: undefined,
      secretIdFile: "/s",
    });
    assert.equal(c.timeoutMs, 5000);
    assert.equal(c.maxAttempts, 3);
    const k = vaultConnectionFromEnv(
      { BAO_AUTH_METHOD: "kubernetes", BAO_AUTH_ROLE: "istiod" },
      {},
      { warn: () => {} },
    );
    assert.deepEqual(k.auth, {
      method: "kubernetes",
      mount: undefined,
      role: "istiod",
      tokenFile: undefined,
    });
    assert.throws(
      () => vaultConnectionFromEnv({ VAULT_SKIP_VERIFY: "maybe" }, {}, { warn: () => {} }),
      /VAULT_SKIP_VERIFY/,
    );
    assert.throws(
      () => vaultConnectionFromEnv({ VAULT_AUTH_METHOD: "ldap" }, {}, { warn: () => {} }),
      /ldap.*token, kubernetes, approle or jwt/,
    );
    assert.throws(
      () =>
        vaultConnectionFromEnv({ VAULT_AUTH_METHOD: "jwt", VAULT_AUTH_ROLE: "r" }, {}, { warn: () => {} }),
      /AUTH_TOKEN_FILE/,
    );
    assert.throws(
      () => vaultConnectionFromEnv({ VAULT_ADDR: "vault:8200" }, {}, { warn: () => {} }),
      /not an http\(s\) URL/,
    );
  });

  test("VAULT_NAMESPACE is sent as X-Vault-Namespace", async () => {
    await root.write("sys/namespaces/team-a", {});
    const inNs = new VaultClient(conn({ namespace: "team-a" }), { token: bao.rootToken, retry: FAST });
    await inNs.write("sys/mounts/kv-ns", { type: "kv", options: { version: "2" } });
    await writeKv(inNs, "vault:kv-ns/data/only-here", { v: "ns-value" });
    assert.equal((await readKvField(inNs, "vault:kv-ns/data/only-here#v")).value, "ns-value");
    // Without the namespace header the mount does not exist.
    assert.equal(await readKv(root, "vault:kv-ns/data/only-here"), null);
    inNs.close();
  });
});

describe("auth methods", () => {
  test("token auth: root token never expires, a bad token is rejected without echoing it", async () => {
    const v = connectVault(conn({ auth: { method: "token", token: bao.rootToken } }), { retry: FAST });
    const info = await v.tokens.start();
    assert.equal(info.leaseSeconds, 0);
    assert.equal(info.expiresAt, Infinity);
    assert.ok((await v.client.read("sys/mounts"))?.data);
    v.close();

    const bogus = "s.bogusbogusbogusbogus123";
    const bad = connectVault(conn({ auth: { method: "token", token: bogus } }), { retry: FAST });
    await assert.rejects(bad.client.read("secret/data/app/db"), (e: unknown) => {
      assert.ok(e instanceof VaultAuthError, String(e));
      assert.match(e.message, /expired, revoked or wrong/);
      assert.ok(!e.message.includes(bogus));
      return true;
    });
    bad.close();
  });

  test("approle login with role_id and secret_id from files; token has the role's policy", async () => {
    const creds = await approleCreds("mesh", { token_policies: ["app-reader"], token_ttl: "60s" });
    const v = connectVault(
      conn({ auth: { method: "approle", roleIdFile: creds.roleIdFile, secretIdFile: creds.secretIdFile } }),
      { retry: FAST },
    );
    const info = await v.tokens.start();
    assert.ok(info.policies.includes("app-reader"), info.policies.join(","));
    assert.equal(info.leaseSeconds, 60);
    assert.equal(info.renewable, true);
    const s = await readKv(v.client, "vault:secret/data/app/db");
    assert.equal(s?.data["user"], "app");
    v.close();
  });

  test("approle with a wrong role_id: the role_id is named (not the secret_id), and no secret is shown", async () => {
    const creds = await approleCreds("mesh-role", { token_policies: ["app-reader"] });
    const wrongRole = "11111111-2222-3333-4444-555555555555";
    await writeFile(creds.roleIdFile, wrongRole);
    const auth = new AppRoleAuth({ roleIdFile: creds.roleIdFile, secretIdFile: creds.secretIdFile });
    const client = new VaultClient(conn(), { retry: FAST });
    await assert.rejects(auth.login(client), (e: unknown) => {
      assert.ok(e instanceof VaultAuthError, String(e));
      assert.match(
        e.message,
        new RegExp(`The role_id is not accepted: check the role_id in ${creds.roleIdFile}`),
      );
      assert.doesNotMatch(e.message, /secret_id in/);
      assert.ok(!e.message.includes(creds.secretId), "the secret_id leaked");
      assert.ok(!e.message.includes(wrongRole), "the role_id is a credential too");
      return true;
    });
    client.close();
  });

  test("approle with a wrong secret_id: clear error that never contains the secret_id", async () => {
    const creds = await approleCreds("mesh2", { token_policies: ["app-reader"] });
    const wrong = "0f4c2b4e-dead-beef-cafe-0123456789ab";
    await writeFile(creds.secretIdFile, wrong);
    const auth = new AppRoleAuth({ roleIdFile: creds.roleIdFile, secretIdFile: creds.secretIdFile });
    const client = new VaultClient(conn(), { retry: FAST });
    await assert.rejects(auth.login(client), (e: unknown) => {
      assert.ok(e instanceof VaultAuthError, String(e));
      assert.match(e.message, /approle login at auth\/approle\/login/);
      assert.match(
        e.message,
        new RegExp(`The secret_id is not accepted: check the secret_id in ${creds.secretIdFile}`),
      );
      assert.doesNotMatch(e.message, /role_id is not accepted/);
      assert.equal(e.retryable, false);
      assert.equal(e.category, "permission_denied");
      const all = `${e.message} ${JSON.stringify(e.vaultErrors)} ${String((e.cause as Error)?.message)}`;
      assert.ok(!all.includes(wrong), `secret_id leaked: ${all}`);
      assert.ok(!all.includes(creds.secretId), "the real secret_id leaked");
      return true;
    });
    // An explicit secretId (e.g. from env) is scrubbed the same way.
    const auth2 = new AppRoleAuth({ roleIdFile: creds.roleIdFile, secretId: wrong });
    await assert.rejects(
      auth2.login(client),
      (e: unknown) =>
        e instanceof VaultAuthError && !e.message.includes(wrong) && /configured secret_id/.test(e.message),
    );
    client.close();
  });

  test("approle locked out after repeated failed logins: the message says so and how to unlock", async () => {
    const creds = await approleCreds("mesh-locked", { token_policies: ["app-reader"] });
    const client = new VaultClient(conn(), { retry: FAST });
    // Each refused login counts towards Vault's user lockout (5 by default). One AppRoleAuth
    // sends a refused credential once (see the next test), so five processes are played here.
    for (let i = 0; i < 5; i++) {
      const bad = new AppRoleAuth({
        roleIdFile: creds.roleIdFile,
        secretId: "0f4c2b4e-dead-beef-cafe-0123456789ab",
      });
      await assert.rejects(bad.login(client), VaultAuthError);
    }
    const good = new AppRoleAuth({ roleIdFile: creds.roleIdFile, secretIdFile: creds.secretIdFile });
    await assert.rejects(good.login(client), (e: unknown) => {
      assert.ok(e instanceof VaultAuthError, String(e));
      assert.match(e.message, /locked out after repeated failed logins/);
      assert.match(e.message, /bao write -f sys\/locked-users\/<auth mount accessor>\/unlock\/<role_id>/);
      assert.ok(!e.message.includes(creds.secretId), "the secret_id leaked");
      return true;
    });
    client.close();
  });

  test("a refused secret_id is sent to Vault once, not again until the file changes or the slow retry time passes: the role never locks", async () => {
    // Its own approle mount with a lockout threshold of 3: sending the refused secret_id at
    // every login would lock the role at the third call.
    await root.write("sys/auth/approle-refused", { type: "approle" });
    await root.write("sys/auth/approle-refused/tune", { user_lockout_config: { lockout_threshold: "3" } });
    await root.write("auth/approle-refused/role/r", { token_policies: ["app-reader"] });
    const rid = await root.read<{ role_id: string }>("auth/approle-refused/role/r/role-id");
    const sid = await root.write<{ secret_id: string }>("auth/approle-refused/role/r/secret-id", {});
    const roleIdFile = join(dir, "refused.role-id");
    const secretIdFile = join(dir, "refused.secret-id");
    await writeFile(roleIdFile, rid!.data!.role_id);
    await writeFile(secretIdFile, "0f4c2b4e-dead-beef-cafe-0123456789ab");
    let now = Date.parse("2026-01-01T00:00:00Z");
    const auth = new AppRoleAuth({ mount: "approle-refused", roleIdFile, secretIdFile }, { now: () => now });
    const client = new VaultClient(conn(), { retry: FAST });
    const refused = (e: unknown): boolean => {
      assert.ok(e instanceof VaultAuthError, String(e));
      assert.match(e.message, /^denied: approle login at auth\/approle-refused\/login/);
      assert.match(e.message, /The secret_id is not accepted/);
      assert.match(
        e.message,
        new RegExp(
          `Fix the file \\(${roleIdFile} / ${secretIdFile}\\): the login is retried when it changes`,
        ),
      );
      assert.match(e.message, /else at 2026-01-01T00:20:00\.000Z/);
      assert.match(e.message, /user lockout/);
      return true;
    };
    // Ten logins (a server's start retries, the token manager, the readiness probe): one refusal at Vault.
    for (let i = 0; i < 10; i++) await assert.rejects(auth.login(client), refused);
    // After the slow retry time: sent once more (the second failed login of three).
    now += APPROLE_REFUSED_RETRY_MS;
    for (let i = 0; i < 10; i++)
      await assert.rejects(
        auth.login(client),
        (e: unknown) => e instanceof VaultAuthError && /^denied: /.test(e.message),
      );
    // The right secret_id in the file is used at once, and the role is not locked.
    await writeFile(secretIdFile, sid!.data!.secret_id);
    const r = await auth.login(client);
    assert.ok(r.policies.includes("app-reader"), r.policies.join(","));
    client.close();
  });

  test("jwt auth validated offline against a public key; wrong audience is refused", async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    await root.write("sys/auth/jwt", { type: "jwt" });
    await root.write("auth/jwt/config", { jwt_validation_pubkeys: [await exportSPKI(publicKey)] });
    await root.write("auth/jwt/role/mesh", {
      role_type: "jwt",
      bound_audiences: ["meshvault"],
      user_claim: "sub",
      token_policies: ["app-reader"],
      token_ttl: "60s",
    });
    const sign = (aud: string) =>
      new SignJWT({})
        .setProtectedHeader({ alg: "ES256" })
        .setSubject("spiffe://cluster.local/ns/a/sa/b")
        .setAudience(aud)
        .setIssuedAt()
        .setExpirationTime("5m")
        .sign(privateKey);
    const tokenFile = join(dir, "jwt");
    await writeFile(tokenFile, await sign("meshvault"));
    const v = connectVault(conn({ auth: { method: "jwt", role: "mesh", tokenFile } }), { retry: FAST });
    assert.ok((await v.tokens.start()).policies.includes("app-reader"));
    assert.equal((await readKvField(v.client, "vault:secret/data/app/db#user")).value, "app");
    v.close();

    // loginWithJwt: the per-workload login used by the "workload" identity mode.
    const client = new VaultClient(conn(), { retry: FAST });
    const good = await loginWithJwt(client, "jwt", "mesh", await sign("meshvault"));
    assert.ok(good.token && good.leaseSeconds === 60 && good.renewable);
    const badJwt = await sign("someone-else");
    await assert.rejects(loginWithJwt(client, "jwt", "mesh", badJwt), (e: unknown) => {
      assert.ok(e instanceof VaultAuthError, String(e));
      assert.match(e.message, /jwt login at auth\/jwt\/login/);
      assert.match(e.message, /aud/i);
      assert.ok(!e.message.includes(badJwt));
      return true;
    });
    await assert.rejects(
      loginWithJwt(client, "no-such-mount", "mesh", badJwt),
      /is an auth method mounted at auth\/no-such-mount/,
    );
    client.close();
  });

  test("kubernetes auth via a TokenReview responder; the SA token is re-read at every login", async () => {
    const { privateKey } = await generateKeyPair("RS256");
    const reviewed: string[] = [];
    // Minimal stand-in for the kube-apiserver's TokenReview API, the one path
    // OpenBao's kubernetes auth calls.
    const srv: Server = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        const spec = (JSON.parse(body) as { spec: { token: string } }).spec;
        reviewed.push(spec.token);
        const payload = JSON.parse(
          Buffer.from(spec.token.split(".")[1] ?? "", "base64url").toString(),
        ) as Record<string, string>;
        res.setHeader("Content-Type", "application/json");
        res.end(
          JSON.stringify({
            kind: "TokenReview",
            apiVersion: "authentication.k8s.io/v1",
            status: {
              authenticated: true,
              user: {
                username: payload["sub"],
                uid: payload["kubernetes.io/serviceaccount/service-account.uid"],
                groups: [],
              },
            },
          }),
        );
      });
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
    const port = (srv.address() as { port: number }).port;
    try {
      await root.write("sys/auth/kubernetes-mesh", { type: "kubernetes" });
      await root.write("auth/kubernetes-mesh/config", {
        kubernetes_host: `http://127.0.0.1:${port}`,
        token_reviewer_jwt: "reviewer-token",
        // Required by OpenBao outside a pod; unused since the host is plain http.
        kubernetes_ca_cert: throwawayCaPem(),
        disable_local_ca_jwt: true,
      });
      await root.write("auth/kubernetes-mesh/role/istiod", {
        bound_service_account_names: ["istiod"],
        bound_service_account_namespaces: ["istio-system"],
        token_policies: ["app-reader"],
        token_ttl: "60s",
      });
      const saToken = (uid: string) =>
        new SignJWT({
          "kubernetes.io/serviceaccount/namespace": "istio-system",
          "kubernetes.io/serviceaccount/service-account.name": "istiod",
          "kubernetes.io/serviceaccount/service-account.uid": uid,
        })
          .setProtectedHeader({ alg: "RS256" })
          .setIssuer("kubernetes/serviceaccount")
          .setSubject("system:serviceaccount:istio-system:istiod")
          .sign(privateKey);
      const tokenFile = join(dir, "sa-token");
      const t1 = await saToken("uid-1");
      await writeFile(tokenFile, t1);
      const v = connectVault(
        conn({ auth: { method: "kubernetes", mount: "kubernetes-mesh", role: "istiod", tokenFile } }),
        { retry: FAST },
      );
      assert.ok((await v.tokens.start()).policies.includes("app-reader"));
      const t2 = await saToken("uid-2");
      await writeFile(tokenFile, t2);
      assert.ok(v.tokens.invalidate(await v.tokens.token()));
      await v.tokens.token();
      assert.deepEqual(reviewed.slice(-2), [t1, t2], "each login must send the token file's current content");
      v.close();
    } finally {
      srv.close();
    }
  });
});

describe("errors turned into actions", () => {
  test("403 names the path, the missing capability and what the token has", async () => {
    const tok = await root.write("auth/token/create", { policies: ["app-reader"], ttl: "60s" });
    const c = new VaultClient(conn(), { token: tok?.auth?.client_token, retry: FAST });
    await assert.rejects(writeKv(c, "vault:secret/data/app/db", { password: "x" }), (e: unknown) => {
      assert.ok(e instanceof VaultPermissionDeniedError, String(e));
      assert.equal(e.category, "permission_denied");
      assert.equal(e.denied, true);
      assert.equal(e.retryable, false);
      assert.deepEqual(e.tokenCapabilities, ["read"]);
      assert.match(
        e.message,
        /POST secret\/data\/app\/db needs the "create\/update" capability on "secret\/data\/app\/db"/,
      );
      assert.match(e.message, /the token has \[read\]/);
      assert.match(e.message, /path "secret\/data\/app\/db" \{ capabilities = \["create", "update"\] \}/);
      assert.ok(!e.message.includes(tok?.auth?.client_token ?? "???"));
      return true;
    });
    await assert.rejects(
      c.read("pki/sign/workload"),
      /GET pki\/sign\/workload needs the "read" capability.*has \[deny\]/,
    );
    c.close();
  });

  test("400 carries Vault's own complaint verbatim plus the path", async () => {
    await assert.rejects(root.write("auth/token/create", { ttl: "not-a-duration" }), (e: unknown) => {
      assert.ok(e instanceof VaultBadRequestError, String(e));
      assert.equal(e.status, 400);
      assert.equal(e.category, "invalid_argument");
      assert.match(e.message, /refused POST auth\/token\/create: /);
      assert.ok(e.vaultErrors.length > 0 && e.message.includes(e.vaultErrors[0] ?? "@@"));
      return true;
    });
  });

  test("connection refused -> unavailable, retried, and tells to check VAULT_ADDR", async () => {
    const log = recordingLog();
    const c = new VaultClient(
      { address: "http://127.0.0.1:1", skipVerify: false },
      {
        token: "t",
        retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 5 },
        logger: log,
      },
    );
    await assert.rejects(c.read("sys/health"), (e: unknown) => {
      assert.ok(e instanceof VaultUnavailableError, String(e));
      assert.equal(e.retryable, true);
      assert.equal(e.unavailable, true);
      assert.match(e.message, /is Vault running at http:\/\/127\.0\.0\.1:1\? Check VAULT_ADDR/);
      assert.match(e.message, /gave up after 3 attempts/);
      return true;
    });
    const retries = log.records.filter((r) => r.level === "debug");
    assert.deepEqual(
      retries.map((r) => [r.obj.path, r.obj.attempt, r.obj.status]),
      [
        ["sys/health", 1, "no response"],
        ["sys/health", 2, "no response"],
      ],
      "two retries logged, with the path and attempt as fields",
    );
    c.close();
  });

  test("KV v2 read, field, version and metadata version; bad references are explained", async () => {
    const ref = "vault:secret/data/pki/istiod#certificate";
    const v1 = await writeKv(root, ref, { certificate: "CERT-1", privateKey: "KEY-1" });
    const v2 = await writeKv(root, ref, { certificate: "CERT-2", privateKey: "KEY-2" });
    assert.equal(v2, (v1 ?? 0) + 1);
    assert.deepEqual(await readKvField(root, ref), { value: "CERT-2", version: v2 });
    assert.equal(await kvMetadataVersion(root, ref), v2);
    assert.equal((await readKv(root, ref, { version: v1 }))?.data["certificate"], "CERT-1");
    assert.equal(await readKv(root, "vault:secret/data/pki/nothing-here"), null);
    await assert.rejects(
      readKvField(root, "vault:secret/data/pki/istiod#nope"),
      /has no string field "nope" \(fields: certificate, privateKey\)/,
    );
    await assert.rejects(
      readKvField(root, "vault:secret/data/pki/absent#certificate"),
      /no secret at secret\/data\/pki\/absent/,
    );

    // KV v1.
    await root.write("sys/mounts/kv1", { type: "kv", options: { version: "1" } });
    await writeKv(root, "vault:kv1/pki/istiod", { certificate: "V1" });
    assert.deepEqual(await readKvField(root, "vault:kv1/pki/istiod#certificate"), {
      value: "V1",
      version: undefined,
    });

    assert.deepEqual(parseKvReference(ref), {
      mount: "secret",
      path: "pki/istiod",
      version: 2,
      field: "certificate",
      raw: ref,
    });
    assert.equal(parseKvReference("vault:team/kv/data/a/b#f").mount, "team/kv");
    for (const [bad, why] of [
      ["secret/data/x#f", /must start with "vault:"/],
      ["vault:secret/data/x#", /field after # is empty/],
      ["vault:secret", /names only a mount/],
      ["vault:secret/metadata/x#f", /not \/metadata\//],
      ["vault:secret/../x#f", /\.\. segment/],
    ] as const) {
      assert.throws(
        () => parseKvReference(bad),
        (e: unknown) => e instanceof VaultConfigError && why.test(e.message),
        bad,
      );
    }
    assert.throws(() => parseKvReference("vault:secret/data/x", { requireField: true }), /#<field>/);
  });
});

describe("token lifecycle", () => {
  // In real time on short TTLs: renew-self and re-login really happen against OpenBao. The
  // schedule itself (when, backoff, which action) is driven by a fake clock in
  // test/vault/token-manager.test.ts.
  test("a short-TTL renewable token is renewed with renew-self and outlives its first TTL", async () => {
    const created = await root.write("auth/token/create", {
      policies: ["app-reader"],
      ttl: "3s",
      explicit_max_ttl: "60s",
    });
    const token = created?.auth?.client_token ?? "";
    const client = new VaultClient(conn(), { retry: FAST });
    const mgr = new VaultTokenManager(client, new TokenAuth({ token }));
    client.useTokenSource(mgr);
    const renewed = within("renew-self of a 3 s token", once(mgr, "renew"), 10_000);
    await mgr.start();
    const [info] = await renewed; // at ~2 s
    assert.equal(info.renewals, 1);
    // Vault's own record: the token now expires later than its first TTL allowed.
    const self = await client.read<{ creation_time: number; expire_time: string }>("auth/token/lookup-self");
    const created3s = ((self?.data?.creation_time ?? 0) + 3) * 1000;
    assert.ok(
      Date.parse(self?.data?.expire_time ?? "") > created3s,
      `expire_time ${self?.data?.expire_time} is past creation + 3 s`,
    );
    mgr.close();
    client.close();
  });

  test("logs in again when renewal hits the max TTL", async () => {
    const creds = await approleCreds("short", {
      token_policies: ["app-reader"],
      token_ttl: "2s",
      token_max_ttl: "3s",
      secret_id_num_uses: 0,
    });
    const v = connectVault(
      conn({ auth: { method: "approle", roleIdFile: creds.roleIdFile, secretIdFile: creds.secretIdFile } }),
      { retry: FAST },
    );
    const events: { kind: string; leaseSeconds: number }[] = [];
    v.tokens.on("login", (i) => events.push({ kind: "login", leaseSeconds: i.leaseSeconds }));
    v.tokens.on("renew", (i) => events.push({ kind: "renew", leaseSeconds: i.leaseSeconds }));
    const relogin = within(
      "a second login",
      new Promise<void>((resolve) => v.tokens.on("login", () => v.tokens.info().logins === 2 && resolve())),
      10_000,
    );
    await v.tokens.start();
    const first = await v.tokens.token();
    await relogin;
    // Renewed first (renewable), then logged in again because the last renewal was capped
    // by token_max_ttl (granted less than the 2 s asked).
    const kinds = events.map((e) => e.kind);
    assert.equal(kinds[0], "login");
    assert.equal(kinds[1], "renew", kinds.join(","));
    assert.equal(kinds.at(-1), "login");
    const lastRenew = events.filter((e) => e.kind === "renew").at(-1)!;
    assert.ok(
      lastRenew.leaseSeconds < 2,
      `the renewal before the login was capped: ${lastRenew.leaseSeconds}s`,
    );
    assert.notEqual(await v.tokens.token(), first);
    assert.equal((await readKv(v.client, "vault:secret/data/app/db"))?.data["user"], "app");
    v.close();
  });

  test("a revoked token is detected on 403 and replaced by a new login, transparently", async () => {
    const creds = await approleCreds("revoked", { token_policies: ["app-reader"], token_ttl: "60s" });
    const v = connectVault(
      conn({ auth: { method: "approle", roleIdFile: creds.roleIdFile, secretIdFile: creds.secretIdFile } }),
      { retry: FAST },
    );
    const info = await v.tokens.start();
    await root.write("auth/token/revoke-accessor", { accessor: info.accessor });
    const s = await readKv(v.client, "vault:secret/data/app/db");
    assert.equal(s?.data["user"], "app");
    assert.equal(v.tokens.info().logins, 2);
    assert.notEqual(v.tokens.info().accessor, info.accessor);
    v.close();
  });
});

describe("TLS", () => {
  let tlsBao: OpenBao;
  before(async () => {
    tlsBao = await startOpenBao({ tls: true });
  });
  after(async () => {
    await tlsBao?.stop();
  });

  test("unknown CA -> 'set VAULT_CACERT'; with the CA it works; skip-verify works and warns", async () => {
    const noCa = new VaultClient(
      { address: tlsBao.addr, skipVerify: false },
      { token: tlsBao.rootToken, retry: FAST },
    );
    await assert.rejects(noCa.read("sys/mounts"), (e: unknown) => {
      assert.ok(e instanceof VaultTlsError, String(e));
      assert.equal(e.retryable, false);
      assert.match(e.message, /unknown authority/);
      assert.match(e.message, /Set VAULT_CACERT/);
      return true;
    });
    noCa.close();

    const warnings: string[] = [];
    const fromEnv = vaultConnectionFromEnv(
      { VAULT_ADDR: tlsBao.addr, VAULT_CACERT: tlsBao.caCert, VAULT_TOKEN: tlsBao.rootToken },
      {},
      { warn: (m) => warnings.push(m) },
    );
    const v = connectVault(fromEnv, { retry: FAST });
    assert.ok((await v.client.read("sys/mounts"))?.data);
    v.close();
    assert.equal(warnings.length, 0, warnings.join("\n"));

    const skip = vaultConnectionFromEnv(
      { BAO_ADDR: tlsBao.addr, BAO_SKIP_VERIFY: "true", BAO_TOKEN: tlsBao.rootToken },
      {},
      { warn: (m) => warnings.push(m) },
    );
    assert.ok(warnings.some((w) => /TLS verification .* disabled/.test(w)));
    const s = connectVault(skip, { retry: FAST });
    assert.ok((await s.client.read("sys/mounts"))?.data);
    s.close();

    assert.throws(
      () => new VaultClient({ address: tlsBao.addr, skipVerify: false, caCert: join(dir, "missing.pem") }),
      /VAULT_CACERT=.*missing\.pem cannot be read \(no such file or directory \(ENOENT\)\)/,
    );
  });
});
