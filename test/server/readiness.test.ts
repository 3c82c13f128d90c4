// Health that tells the truth, on a real persistent OpenBao: `meshvault server` (the CLI
// process) with vault-sign answers /readyz 503 with the reason within 5 s of Vault being
// sealed, stopped or refusing its login, and 200 within 5 s of recovery; /_status and
// meshvault_authority_ready say the same. Meanwhile vault-intermediate and vault-kv servers on
// the same Vault never stop issuing. A server started while Vault is down stays up not ready; one
// with a refused secret_id does not lock the role out and turns ready once the file is fixed.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseCertificate } from "../../src/pki/certificate.js";
import type { CaClient } from "../helpers/ca-client.js";
import { spawnCli } from "../helpers/cli.js";
import { Leftovers } from "../helpers/leftovers.js";
import { opensslCsr } from "../helpers/openssl.js";
import { freePort } from "../helpers/ports.js";
import { waitFor } from "../helpers/wait.js";
import {
  ISSUER,
  ROLE,
  TD,
  CaServers,
  approleLogin,
  approleVault,
  serverConfig,
  setupPki,
  startVaultFixture,
  writePolicy,
  type VaultFixture,
} from "../authority/vault-fixture.js";

const leftovers = new Leftovers("MESHVAULT_KEEP_TEST_DIRS");
let fx: VaultFixture;
let signLogin: Awaited<ReturnType<typeof approleLogin>>;
const cas = new CaServers();
const others: { name: string; client: CaClient }[] = [];
const csr = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "/O=").csrPem;
const SLEEP = `spiffe://${TD}/ns/default/sa/sleep`;
// The promise this test holds the server to.
const WITHIN_MS = 5000;

before(async () => {
  fx = await startVaultFixture(true);
  const { rootPem } = await setupPki(fx.admin);
  await writePolicy(fx.admin, "sign", { [`pki_int/sign/${ROLE}`]: ["update"] });
  await writePolicy(fx.admin, "int", { "pki/root/sign-intermediate": ["update"] });
  await writePolicy(fx.admin, "kv", {
    "secret/data/pki/istiod": ["read"],
    "secret/metadata/pki/istiod": ["read"],
  });
  signLogin = await approleLogin(fx, "cli-sign", ["sign"]);
  // The CA pair seed 001 keeps in KV: an intermediate whose key Vault exported, signed by the root.
  const g = await fx.admin.write<{ csr: string; private_key: string }>(
    "pki_int/intermediate/generate/exported",
    {
      common_name: "kv ca",
      key_type: "ec",
      key_bits: 256,
    },
  );
  const s = await fx.admin.write<{ certificate: string }>("pki/root/sign-intermediate", {
    csr: g!.data!.csr,
    common_name: "kv ca",
    ttl: "720h",
    format: "pem",
  });
  await fx.admin.write("secret/data/pki/istiod", {
    data: { certificate: s!.data!.certificate, privateKey: g!.data!.private_key, root: rootPem },
  });
  const ref = "vault:secret/data/pki/istiod";
  for (const [name, authority, policy] of [
    ["intermediate", { type: "vault-intermediate" }, "int"],
    [
      "kv",
      {
        type: "vault-kv",
        certificate: `${ref}#certificate`,
        privateKey: `${ref}#privateKey`,
        root: `${ref}#root`,
        pollInterval: 1,
      },
      "kv",
    ],
  ] as const) {
    const login = await approleLogin(fx, `other-${name}`, [policy]);
    const { client } = await cas.start(serverConfig(fx, name, authority, approleVault(login)));
    others.push({ name, client });
  }
});

after(async () => {
  await cas.close();
  await fx?.close();
});

/** Issuance by the vault-intermediate and vault-kv servers: it must never stop. */
async function othersIssue(): Promise<void> {
  const token = await fx.token("default", "sleep");
  for (const o of others) {
    const chain = await o.client.create(csr, { token });
    assert.deepEqual(parseCertificate(chain[0]!).sans.uris, [SLEEP], `${o.name} issues`);
  }
}

class CliServer {
  readonly child: ChildProcess;
  output = "";
  constructor(
    readonly http: number,
    config: string,
  ) {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of Object.keys(env)) if (/^(MESHVAULT|VAULT|BAO)_/.test(k)) delete env[k];
    this.child = spawnCli(["server", "-c", config, "--log-format", "json"], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    leftovers.child(this.child);
    for (const s of [this.child.stdout!, this.child.stderr!])
      s.setEncoding("utf8").on("data", (c: string) => (this.output += c));
  }

  /** /readyz, /_status and the metric, read together. */
  async health(): Promise<
    { status: number; body: string; doc: Record<string, unknown>; metric: string } | undefined
  > {
    const base = `http://127.0.0.1:${this.http}`;
    try {
      const r = await fetch(`${base}/readyz`);
      const body = await r.text();
      const doc = (await (await fetch(`${base}/_status`)).json()) as Record<string, unknown>;
      const metrics = await (await fetch(`${base}/metrics`)).text();
      const metric =
        /^meshvault_authority_ready\{authority="vault-sign"\} (\d)$/m.exec(metrics)?.[1] ?? "absent";
      return { status: r.status, body, doc, metric };
    } catch {
      return undefined; // not listening yet
    }
  }

  /** Waits for /readyz to answer `status` (and the body to match), then checks the three agree. */
  async becomes(status: 200 | 503, body: RegExp, ms = WITHIN_MS): Promise<string> {
    const h = await waitFor(
      `/readyz ${status} ${String(body)}`,
      async () => {
        const x = await this.health();
        // The three are separate requests: a retry between them (the attempt number in the
        // reason) is a moving target, not a disagreement, so read again until one snapshot.
        const agree =
          x?.metric === (status === 200 ? "1" : "0") &&
          x.doc["ready"] === (status === 200) &&
          (status === 200 || `not ready: ${String(x.doc["reason"])}\n` === x.body);
        return x?.status === status && body.test(x.body) && agree && x;
      },
      ms,
    );
    assert.equal(h.metric, status === 200 ? "1" : "0", "meshvault_authority_ready agrees with /readyz");
    assert.equal(h.doc["ready"], status === 200, "/_status agrees with /readyz");
    if (status === 503) assert.equal(`not ready: ${String(h.doc["reason"])}\n`, h.body);
    return h.body;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.kill("SIGTERM");
    await new Promise((r) => this.child.once("exit", r));
  }
}

async function cliServer(name: string, login = signLogin): Promise<CliServer> {
  const [grpc, http] = [await freePort(), await freePort()];
  const config = join(fx.dir, `${name}.yaml`);
  // JSON is YAML.
  writeFileSync(
    config,
    JSON.stringify({
      dataDir: join(fx.dir, `${name}-data`),
      listen: { grpc: `127.0.0.1:${grpc}`, http: `127.0.0.1:${http}` },
      authentication: { localIssuer: false, jwt: [{ issuer: ISSUER, jwksFile: fx.jwksFile }] },
      authority: { type: "vault-sign" },
      vault: { address: fx.bao.addr, ...approleVault(login) },
    }),
  );
  return new CliServer(http, config);
}

test("meshvault server (vault-sign): sealed, stopped, login revoked -> 503 with the reason within 5 s, 200 within 5 s of recovery; intermediate and kv keep issuing", async () => {
  const server = await cliServer("cli-sign");
  try {
    await server.becomes(200, /^ready/, 60_000); // the first start of a CLI process
    await othersIssue();

    await fx.bao.seal();
    try {
      assert.match(await server.becomes(503, /sealed/), /unseal it/);
      await othersIssue();
    } finally {
      await fx.bao.unseal();
    }
    await server.becomes(200, /^ready/);

    await fx.bao.halt();
    try {
      assert.match(await server.becomes(503, /connection refused|cannot connect/), /Check VAULT_ADDR/);
      await othersIssue();
    } finally {
      await fx.bao.start();
    }
    await server.becomes(200, /^ready/);

    // No way back in: its secret_id destroyed and every approle token revoked.
    await fx.admin.write("auth/approle/role/cli-sign/secret-id/destroy", {
      secret_id: readFileSync(signLogin.secretIdFile, "utf8").trim(),
    });
    await fx.admin.write("sys/leases/revoke-prefix/auth/approle/login", {});
    const refused = await server.becomes(503, /approle login/);
    assert.match(refused, /secret_id/);
    assert.doesNotMatch(
      refused,
      /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/,
      "no credential shown",
    );
    await othersIssue();
    const fresh = await fx.admin.write<{ secret_id: string }>("auth/approle/role/cli-sign/secret-id", {});
    writeFileSync(signLogin.secretIdFile, fresh!.data!.secret_id, { mode: 0o600 });
    await server.becomes(200, /^ready/);
    assert.equal(server.child.exitCode, null, "the server never exited");
  } finally {
    await server.stop();
  }
});

test("meshvault server started while Vault is down stays up not ready, says why, and turns ready when Vault is back", async () => {
  await fx.bao.halt();
  let server: CliServer | undefined;
  try {
    server = await cliServer("cli-late");
    const body = await server.becomes(
      503,
      /could not start .*connection refused|could not start .*cannot connect/,
      60_000,
    );
    assert.match(body, /retrying at/);
    assert.match(server.output, /the authority cannot start; serving not ready and retrying/);
  } finally {
    await fx.bao.start();
  }
  try {
    await server.becomes(200, /^ready/, 15_000); // start retries back off to 5 s
    assert.equal(server.child.exitCode, null);
  } finally {
    await server.stop();
  }
});

test("meshvault server with a refused secret_id stays up, sends it to Vault once (the role never locks however long it runs) and turns ready when the right one is written", async () => {
  const login = await approleLogin(fx, "cli-refused", ["sign"]);
  const right = readFileSync(login.secretIdFile, "utf8");
  const roleId = readFileSync(login.roleIdFile, "utf8").trim();
  writeFileSync(login.secretIdFile, "00000000-1111-2222-3333-444444444444", { mode: 0o600 });
  const server = await cliServer("cli-refused", login);
  try {
    const body = await server.becomes(503, /denied: /, 60_000);
    assert.match(body, /The secret_id is not accepted/);
    assert.match(body, /the login is retried when it changes/);
    assert.doesNotMatch(body, /00000000-1111/, "no credential shown");
    // Each start attempt used to send the refused secret_id again (twice): six attempts are
    // more failed logins than the five that make OpenBao lock the role out.
    await waitFor(
      "six start attempts",
      async () => Number((await server.health())?.doc["startAttempts"] ?? 0) >= 6,
      60_000,
    );
    const locked = await fx.admin.read("sys/locked-users");
    assert.ok(!JSON.stringify(locked?.data ?? {}).includes(roleId), "the role_id is not locked");
    // The fix: the right secret_id in the file; the next attempt logs in, no restart.
    writeFileSync(login.secretIdFile, right, { mode: 0o600 });
    await server.becomes(200, /^ready/, 15_000);
    assert.equal(server.child.exitCode, null, "the server never exited");
  } finally {
    await server.stop();
  }
});
