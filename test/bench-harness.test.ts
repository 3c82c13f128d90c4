// The istiod comparison benchmark (bench/istiod.ts) works: the Go peers build, both servers
// issue to the same generator, and the generator really verifies what it gets (a response
// that does not chain to the expected roots stops the run). No timing is asserted here:
// speed is only compared in `npm run bench`, against the baseline in the same run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO } from "./helpers/cli.js";
import {
  goPeersDir,
  loadgen,
  pluginCa,
  serviceAccountToken,
  startIstiodCa,
  stopAll,
  type Row,
  type Target,
} from "../bench/istiod-peers.js";

test("npm run bench's istiod comparison runs end to end (smoke mode) and prints both sides", () => {
  // Under npm test the servers run from its copy of the build (MESHVAULT_TEST_CLI); alone, from dist/.
  if (!process.env["MESHVAULT_TEST_CLI"])
    execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: REPO, stdio: "inherit" });
  const r = spawnSync(process.execPath, ["--import", "tsx", "bench/istiod.ts"], {
    cwd: REPO,
    encoding: "utf8",
    env: { ...process.env, BENCH_MODE: "smoke" },
    timeout: 15 * 60_000,
  });
  assert.equal(r.status, 0, `bench/istiod.ts failed:\n${r.stdout}\n${r.stderr}`);
  for (const csr of ["p256", "rsa2048"]) {
    const row = r.stdout.split("\n").find((l) => l.startsWith(`${csr} `));
    assert.ok(row, `no ${csr} row in:\n${r.stdout}`);
    const [, callers, conns, mv, istiod, ratio] = row.split(/\s{2,}/);
    assert.equal(callers, "4");
    assert.equal(conns, "2");
    for (const n of [mv, istiod, ratio])
      assert.ok(Number(n!.replace(/,/g, "")) > 0, `bad number ${n} in ${row}`);
  }
});

test("the load generator checks what istiod's CA returns: a leaf for another identity stops the run", async () => {
  const bin = goPeersDir();
  const dir = mkdtempSync(join(tmpdir(), "meshvault-bench-harness-"));
  try {
    const rootsFile = pluginCa(dir);
    const { jwksFile, token } = await serviceAccountToken(dir);
    const istiod = await startIstiodCa(bin, dir, jwksFile);
    const targets: Record<string, Target> = {
      istiod: { kind: "grpc", addr: `127.0.0.1:${istiod.port}`, rootsFile, token, pids: [istiod.pid] },
    };
    const timing = { seconds: 0.2, warmupSeconds: 0 };
    const rows: Row[] = [{ label: "x", csr: "p256", callers: 2, conns: 1, a: "istiod", b: "istiod" }];
    // The anchor: the token's own identity verifies.
    const [ok] = loadgen(bin, targets, timing, rows);
    assert.ok(ok!.results["istiod"]!.ops > 0);
    assert.ok(ok!.results["istiod"]!.serverCpuUsPerCert > 0, "server CPU is read from /proc");
    // istiod certifies the caller's identity whatever the CSR asks for; expecting another
    // identity must fail verification of the first response.
    const plan = { ...timing, spiffeId: "spiffe://cluster.local/ns/default/sa/other", targets, rows };
    const r = spawnSync(join(bin, "loadgen"), {
      input: JSON.stringify(plan),
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /leaf URI SANs \[spiffe:\/\/cluster.local\/ns\/default\/sa\/bench\], expected/);
  } finally {
    stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
});
