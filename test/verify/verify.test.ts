// `meshvault verify` across "clusters": two `meshvault server` processes whose
// vault-intermediate (exported, seed 003) intermediates come from one root mount on a real
// OpenBao, and a third server with its own local root. The CLI runs as a process.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VaultClient } from "../../src/vault/index.js";
import type { VerifyReport } from "../../src/verify/matrix.js";
import { parseSourceSpec } from "../../src/verify/sources.js";
import { cliSync } from "../helpers/cli.js";
import { writeLocalToken } from "../helpers/local-token.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { startServerProcess, type ServerProcess } from "../helpers/server-process.js";

let bao: OpenBao;
let dir: string;
const servers: ServerProcess[] = [];
let A: ServerProcess;
let B: ServerProcess;
let C: ServerProcess;
const tokens = new Map<string, string>();

function vaultCluster(name: string, intermediateMount: string): Promise<ServerProcess> {
  return startServerProcess(
    name,
    dir,
    {
      authority: {
        type: "vault-intermediate",
        mode: "exported",
        rootMount: "pki",
        intermediateMount,
        ttl: "2h",
      },
      vault: { address: bao.addr, auth: { method: "token" } },
    },
    { VAULT_TOKEN: bao.rootToken },
  );
}

async function tokenFor(s: ServerProcess): Promise<string> {
  const file = await writeLocalToken(join(dir, `${s.name}.token`), s.dataDir, {
    serviceAccount: "verify",
    ttlSeconds: 600,
  });
  tokens.set(s.name, file);
  return file;
}

const src = (s: ServerProcess): string =>
  `${s.name}=ca:http://${s.http},grpc=${s.grpc},token=${tokens.get(s.name)}`;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshvault-verify-"));
  bao = await startOpenBao();
  const admin = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  await admin.write("sys/mounts/pki", { type: "pki", config: { max_lease_ttl: "87600h" } });
  await admin.write("pki/root/generate/internal", {
    common_name: "shared mesh root",
    key_type: "ec",
    ttl: "8760h",
  });
  for (const m of ["pki_int_a", "pki_int_b"])
    await admin.write(`sys/mounts/${m}`, { type: "pki", config: { max_lease_ttl: "8760h" } });
  admin.close();
  [A, B, C] = await Promise.all([
    vaultCluster("A", "pki_int_a"),
    vaultCluster("B", "pki_int_b"),
    startServerProcess("C", dir, { authority: { type: "local" } }),
  ]);
  servers.push(A, B, C);
  for (const s of servers) await tokenFor(s);
});

after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await bao?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("two clusters with intermediates from one Vault root trust each other: exit 0, leaves verified both ways", () => {
  const r = cliSync(["verify", src(A), src(B), `file=file:${join(A.dataDir, "root-cert.pem")}`]);
  assert.equal(r.code, 0, r.out + r.err);
  assert.match(r.out, /A \(ca:http/);
  assert.match(r.out, /shared mesh root/);
  assert.match(r.out, /all sources trust each other/);
  const row = r.out.split("\n").find((l) => /^A\s+ok/.test(l));
  assert.ok(row && /^A\s+ok\s+ok\s+ok\s*$/.test(row), r.out);
});

test("a mismatched third cluster: exit 1, JSON names which pairs fail, the root that differs and a fix", () => {
  const r = cliSync(["verify", "-o", "json", src(A), src(B), src(C)]);
  assert.equal(r.code, 1, r.out + r.err);
  const report = JSON.parse(r.out) as VerifyReport;
  assert.equal(report.ok, false);
  const pair = (from: string, to: string) => report.matrix.find((m) => m.from === from && m.to === to)!;
  assert.deepEqual([pair("A", "B").ok, pair("B", "A").ok, pair("A", "A").ok], [true, true, true]);
  assert.equal(pair("A", "B").how, "leaf");
  for (const [f, t] of [
    ["A", "C"],
    ["C", "A"],
    ["B", "C"],
    ["C", "B"],
  ] as const) {
    assert.equal(pair(f, t).ok, false, `${f} -> ${t}`);
    assert.match(pair(f, t).reason!, new RegExp(`does not verify under ${t}'s bundle`));
  }
  const rootC = report.sources.find((s) => s.name === "C")!.trusted[0]!;
  assert.match(rootC.fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  assert.match(rootC.subject, /meshvault root CA/);
  assert.ok(
    report.fixes.some((f) => /does not trust .*meshvault root CA.* from C/.test(f)),
    report.fixes.join("\n"),
  );
});

test("an unreachable source and a bad source spec are named", () => {
  const down = cliSync(["verify", src(A), "gone=ca:http://127.0.0.1:1"]);
  assert.equal(down.code, 1);
  assert.match(down.out, /gone \/roots: cannot fetch http:\/\/127\.0\.0\.1:1\/roots/);
  const bad = cliSync(["verify", "x=ca:http://h:1,color=red"]);
  assert.equal(bad.code, 2);
  assert.match(
    bad.err,
    /unknown option "color=red" for ca: sources \(accepted: grpc=, token=, server-name=\)/,
  );
  assert.throws(() => parseSourceSpec("ca:nothttp"), /needs the server's HTTP URL/);
});
