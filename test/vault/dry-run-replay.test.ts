// `vault setup --dry-run` prints a script an operator can run instead of letting meshvault
// talk to Vault. Replayed with the real CLI (OpenBao's `bao`, under the name `vault`) on a fresh
// dev server, it must run cleanly, and a real `vault setup` afterwards must find nothing to change.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cli } from "../helpers/cli.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { EC_P256_KEY, opensslSelfSigned } from "../helpers/openssl.js";

const dir = mkdtempSync(join(tmpdir(), "meshvault-replay-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let bin: string;
before(() => {
  // The script says `vault`; OpenBao's CLI takes the same commands.
  bin = join(dir, "bin");
  mkdirSync(bin);
});

async function replay(name: string, flags: string[]): Promise<void> {
  const bao: OpenBao = await startOpenBao();
  try {
    try {
      symlinkSync(bao.bin, join(bin, "vault"));
    } catch {
      /* already linked for an earlier case */
    }
    const work = join(dir, name);
    mkdirSync(work);
    const env = { ...process.env, VAULT_ADDR: bao.addr, BAO_ADDR: bao.addr, VAULT_TOKEN: bao.rootToken };
    const dry = await cli(["vault", "setup", "--dry-run", "--address", bao.addr, ...flags], env);
    assert.equal(dry.code, 0, dry.err);
    const script = join(work, "setup.sh");
    writeFileSync(script, dry.out);
    const run = spawnSync("bash", ["-e", script], {
      cwd: work,
      env: { ...env, PATH: `${bin}:${process.env.PATH}` },
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(
      run.status,
      0,
      `${name}: the dry-run script failed:\n${run.stderr}\n--- script ---\n${dry.out}`,
    );
    const real = await cli(["vault", "setup", "--address", bao.addr, ...flags], env);
    assert.equal(real.code, 0, `${name}: ${real.out}\n${real.err}`);
    assert.match(real.out, /\nnothing to change\n/, `${name}: after the replay:\n${real.out}`);
  } finally {
    await bao.stop();
  }
}

test("vault-sign with approle: the dry-run script replays on a fresh dev server", async () => {
  await replay("sign", [
    "--mode",
    "vault-sign",
    "--auth",
    "approle",
    "--role-id-file",
    join(dir, "sign.role-id"),
    "--secret-id-file",
    join(dir, "sign.secret-id"),
  ]);
});

test("vault-kv (dev servers already have secret/): the dry-run script replays", async () => {
  const keyFile = join(dir, "ca-key.pem");
  const certFile = join(dir, "ca-cert.pem");
  opensslSelfSigned({
    keyArgs: EC_P256_KEY,
    days: 30,
    subj: "/CN=replay CA",
    cert: certFile,
    key: keyFile,
    extra: [
      "-addext",
      "basicConstraints=critical,CA:true",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ],
  });
  await replay("kv", ["--mode", "vault-kv", "--ca-cert", certFile, "--ca-key", keyFile]);
});

test("vault-intermediate: the dry-run script replays", async () => {
  await replay("intermediate", ["--mode", "vault-intermediate"]);
});

test("vault-sign identity workload (templated per-workload role on the auth mount's accessor): the dry-run script replays", async () => {
  const caFile = join(dir, "kube-ca.pem");
  opensslSelfSigned({
    keyArgs: EC_P256_KEY,
    days: 1,
    subj: "/CN=kube CA",
    cert: caFile,
    key: join(dir, "kube-ca.key"),
  });
  await replay("sign-workload", [
    "--mode",
    "vault-sign",
    "--identity",
    "workload",
    "--workload-auth",
    "kubernetes",
    // Configuring the auth method does not contact the apiserver; any CA certificate will do.
    "--kubernetes-host",
    "https://127.0.0.1:6443",
    "--kubernetes-ca-cert",
    caFile,
  ]);
});
