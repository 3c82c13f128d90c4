// `meshvault vault check` against a real (persistent, so it can be sealed)
// OpenBao: all ok after setup, then each broken thing reported with its fix.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer as createHttpsServer } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { vaultConnectionFromConfig, type VaultSection } from "../../src/config/vault-schema.js";
import { runCheck, type CheckResult } from "../../src/vault/check/index.js";
import { VaultClient } from "../../src/vault/index.js";
import { resolveAuthority, runSetup, type SetupFlags } from "../../src/vault/setup/index.js";
import { EC_P256_KEY, openssl, opensslSelfSigned } from "../helpers/openssl.js";
import { freePort, startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { startStallingProxy } from "../helpers/hanging-peer.js";
import { waitFor, within } from "../helpers/wait.js";

let bao: OpenBao;
let root: VaultClient;
let dir: string;

before(async () => {
  bao = await startOpenBao({ persistent: true });
  root = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  dir = await mkdtemp(join(tmpdir(), "meshvault-check-test-"));
});
after(async () => {
  root?.close();
  await bao?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const signFlags = (): SetupFlags => ({
  mode: "vault-sign",
  auth: "approle",
  secretIdFile: join(dir, "secret-id"),
  roleIdFile: join(dir, "role-id"),
});

async function setup(flags: SetupFlags): Promise<void> {
  const lines: string[] = [];
  const r = await runSetup({
    flags,
    env: { VAULT_ADDR: bao.addr, VAULT_TOKEN: bao.rootToken },
    out: (l) => lines.push(l),
  });
  assert.equal(r?.failed, false, lines.join("\n"));
}

async function check(flags: SetupFlags, section: VaultSection): Promise<CheckResult & { out: string }> {
  const lines: string[] = [];
  const res = await runCheck({
    connection: vaultConnectionFromConfig(section, {}),
    authority: resolveAuthority(flags, undefined),
    trustDomain: "cluster.local",
    out: (l) => lines.push(l),
  });
  const out = lines.join("\n");
  assert.ok(!out.includes(bao.rootToken));
  return { ...res, out };
}

const approle = (): VaultSection => ({
  address: bao.addr,
  auth: {
    method: "approle",
    mount: "approle",
    roleIdFile: join(dir, "role-id"),
    secretIdFile: join(dir, "secret-id"),
  },
});

/** vault-kv with a new CA pair (files named after `name`), set up; the check's flags and login. */
async function kvMode(name: string): Promise<{ flags: SetupFlags; section: VaultSection; cert: string }> {
  const key = join(dir, `${name}-ca-key.pem`);
  const cert = join(dir, `${name}-ca-cert.pem`);
  opensslSelfSigned({ keyArgs: EC_P256_KEY, days: 30, subj: "/CN=istiod-ca", cert, key });
  const files = { secretIdFile: join(dir, `${name}-secret-id`), roleIdFile: join(dir, `${name}-role-id`) };
  const flags: SetupFlags = {
    mode: "vault-kv",
    caCert: cert,
    caKey: key,
    auth: "approle",
    authRole: "istiod",
    ...files,
  };
  await setup(flags);
  return {
    flags,
    section: { address: bao.addr, auth: { method: "approle", mount: "approle", ...files } },
    cert,
  };
}

describe("vault check", () => {
  test("all ok after setup (vault-sign, approle); the token is never printed", async () => {
    await setup(signFlags());
    const r = await check(signFlags(), approle());
    assert.equal(r.exitCode, 0, r.out);
    assert.ok(
      r.lines.every((l) => l.ok),
      r.out,
    );
    for (const want of [
      /ok {4}Vault at .* reachable/,
      /ok {4}Vault is unsealed/,
      /ok {4}logged in \(approle login at auth\/approle\): token TTL 1h, renewable, policies \[default, meshvault-sign\]/,
      /ok {4}update on pki_int\/sign\/meshvault-workload/,
      /ok {4}signing CA at pki_int\//,
      /ok {4}test signature at pki_int\/sign\/meshvault-workload/,
      /ok {4}role meshvault-workload refuses URIs outside spiffe:\/\/cluster\.local\/\*/,
      /all \d+ checks passed/,
    ]) {
      assert.match(r.out, want);
    }
    const secretId = readFileSync(join(dir, "secret-id"), "utf8").trim();
    assert.ok(!r.out.includes(secretId));
  });

  test("a policy missing a path: FAIL naming the path and capability, with the HCL to add", async () => {
    const policy = (await root.read<{ policy: string }>("sys/policies/acl/meshvault-sign"))!.data!.policy;
    const cut = policy.replace(
      /# sign workload CSRs\npath "pki_int\/sign\/meshvault-workload" \{\n[^}]*\}\n/,
      "",
    );
    assert.notEqual(cut, policy);
    await root.request("PUT", "sys/policies/acl/meshvault-sign", { policy: cut });
    const r = await check(signFlags(), approle());
    assert.equal(r.exitCode, 1);
    assert.match(
      r.out,
      /FAIL: the token lacks "update" on pki_int\/sign\/meshvault-workload, needed to sign workload CSRs \(it has: deny\) — fix: add path "pki_int\/sign\/meshvault-workload" \{ capabilities = \["update"\] \} to one of the token's policies \(meshvault-sign\)/,
    );
    assert.match(r.out, /FAIL: no test signature: the token may not call pki_int\/sign\/meshvault-workload/);
    assert.match(r.out, /\d+ of \d+ checks failed/);
    // setup puts it back.
    await setup(signFlags());
    assert.equal((await check(signFlags(), approle())).exitCode, 0);
  });

  test("a wrong secret_id: FAIL at login with the fix", async () => {
    const bad = join(dir, "bad-secret-id");
    await writeFile(bad, "00000000-0000-0000-0000-000000000000\n");
    const r = await check(signFlags(), {
      ...approle(),
      auth: { method: "approle", mount: "approle", roleIdFile: join(dir, "role-id"), secretIdFile: bad },
    });
    assert.equal(r.exitCode, 1);
    assert.match(
      r.out,
      /FAIL: login failed \(approle login at auth\/approle\): .* — fix: write a fresh secret_id/,
    );
    assert.ok(!r.out.includes("00000000-0000-0000-0000-000000000000"), "the secret_id is redacted");
  });

  test("vault-kv: ok for a good pair, FAIL when the key in KV does not match the certificate", async () => {
    const { flags, section, cert } = await kvMode("kv");
    const ok = await check(flags, section);
    assert.equal(ok.exitCode, 0, ok.out);
    assert.match(
      ok.out,
      /ok {4}KV CA pair vault:secret\/data\/pki\/istiod#certificate: CN=istiod-ca, key matches/,
    );
    const other = openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    await root.write("secret/data/pki/istiod", {
      data: { certificate: readFileSync(cert, "utf8"), privateKey: other },
    });
    const bad = await check(flags, section);
    assert.equal(bad.exitCode, 1);
    assert.match(
      bad.out,
      /FAIL: vault:secret\/data\/pki\/istiod#privateKey does not belong to the certificate CN=istiod-ca — fix: write the matching pair: meshvault vault setup --mode vault-kv/,
    );
    assert.ok(!bad.out.includes("PRIVATE KEY"));
  });

  test("wrong address: FAIL reachable", async () => {
    const port = await freePort();
    const r = await check(signFlags(), { address: `http://127.0.0.1:${port}`, token: "x-not-used" });
    assert.equal(r.exitCode, 1);
    assert.match(
      r.out,
      /FAIL: Vault at http:\/\/127\.0\.0\.1:\d+ is not reachable \(.*connection refused.*\) — fix: check VAULT_ADDR/,
    );
    assert.equal(r.lines.length, 1, "nothing else is tried");
  });

  test("TLS with an unknown authority: FAIL with set VAULT_CACERT", async () => {
    const key = join(dir, "tls-key.pem");
    const cert = join(dir, "tls-cert.pem");
    opensslSelfSigned({
      keyArgs: EC_P256_KEY,
      days: 1,
      subj: "/CN=127.0.0.1",
      cert,
      key,
      extra: ["-addext", "subjectAltName=IP:127.0.0.1"],
    });
    const srv = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_q, s) =>
      s.end("{}"),
    );
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
    try {
      const port = (srv.address() as { port: number }).port;
      const r = await check(signFlags(), { address: `https://127.0.0.1:${port}`, token: "x" });
      assert.equal(r.exitCode, 1);
      assert.match(r.out, /FAIL: TLS to Vault at https:\/\/127\.0\.0\.1:\d+: \w+ — fix: set VAULT_CACERT/);
      // With the CA given, TLS passes (the stand-in is not Vault, so nothing more is expected).
      const ok = await check(signFlags(), { address: `https://127.0.0.1:${port}`, token: "x", caCert: cert });
      assert.match(ok.out, /ok {4}TLS: Vault's certificate verified against/);
    } finally {
      srv.close();
    }
  });

  test("cancelled while any step's request is unanswered, the check ends at once and says so (vault-sign, vault-kv)", async () => {
    const kv = await kvMode("cancel-kv");
    await setup(signFlags());
    for (const [flags, section, requests] of [
      // sys/health, login, capabilities-self, ca/pem, ca_chain, the test signature, the foreign one
      [signFlags(), approle(), 7],
      // sys/health, login, capabilities-self, the KV pair (two reads through one function, with
      // no line between them: the first is the one held)
      [kv.flags, kv.section, 4],
    ] as const) {
      const full = await check(flags, section);
      assert.equal(full.exitCode, 0, full.out);
      // Hang Vault after each line of the full run in turn: the request that comes next is never
      // answered, and cancelling must end it at once (each request's own deadline is 10 min here).
      const heldAfter = new Set<number>();
      for (let k = 0; k <= full.lines.length; k++) {
        const proxy = await startStallingProxy(bao.addr);
        const cancel = new AbortController();
        const lines: string[] = [];
        let reported = 0;
        try {
          let finished = false;
          const run = runCheck({
            connection: vaultConnectionFromConfig({ ...section, address: proxy.url }, {}),
            authority: resolveAuthority(flags, undefined),
            trustDomain: "cluster.local",
            out: (l) => {
              lines.push(l);
              if (/^(ok {4}|FAIL: )/.test(l)) reported++;
              if (reported === k) proxy.stall();
            },
            signal: cancel.signal,
            timeoutMs: 600_000,
          });
          run.then(
            () => (finished = true),
            () => (finished = true),
          );
          await waitFor(
            `line ${k}: a request held, or the check over`,
            async () => finished || proxy.held() > 0,
          );
          if (proxy.held() === 0) {
            assert.equal((await run).exitCode, 0, `line ${k}: no request after it`);
            continue;
          }
          cancel.abort();
          const r = await within(`line ${k}: the cancelled check`, run);
          assert.equal(r.cancelled, true);
          assert.equal(r.exitCode, 1);
          assert.deepEqual(
            r.lines.map((l) => ({ ...l, what: l.what.replace(proxy.url, bao.addr) })),
            full.lines.slice(0, r.lines.length),
            "what was reported, as in the full run",
          );
          assert.match(
            lines.at(-1)!,
            new RegExp(
              `^vault check cancelled, after ${r.lines.length} check\\(s\\) \\(0 failed\\); the rest was not checked$`,
            ),
          );
          heldAfter.add(r.lines.length);
        } finally {
          proxy.close();
        }
      }
      assert.equal(
        heldAfter.size,
        requests,
        `${flags.mode}: every request was held once: ${[...heldAfter].join(", ")}`,
      );
    }
  });

  test("sealed Vault: FAIL sealed with the unseal fix; ok again after unseal", async () => {
    await bao.seal();
    try {
      const r = await check(signFlags(), approle());
      assert.equal(r.exitCode, 1);
      assert.match(
        r.out,
        /FAIL: Vault at .* is sealed — fix: unseal it: bao operator unseal \(or vault operator unseal\)/,
      );
    } finally {
      await bao.unseal();
    }
    assert.equal((await check(signFlags(), approle())).exitCode, 0);
  });
});

test("a root token is refused as a check credential: it would pass every capability check", async () => {
  await setup(signFlags());
  const r = await check(signFlags(), { address: bao.addr, token: bao.rootToken });
  assert.equal(r.exitCode, 1, r.out);
  assert.match(r.out, /FAIL.*with a root token: every capability check would pass/);
  assert.match(r.out, /check with the server's own credentials: set vault\.auth/);
  assert.doesNotMatch(r.out, /sys\/capabilities|^ok .*capabilit/m);
});
