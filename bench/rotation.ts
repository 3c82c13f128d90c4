// The root-rotation proof at bench scale, and a Vault outage soak. Not a test: it prints the
// requests (each a new mutual TLS handshake through two tunnels) attempted and failed per phase.
//
//   node --import tsx bench/rotation.ts
//   BENCH_PAIRS=8 BENCH_CERT_TTL=120s BENCH_OUTAGE_SECONDS=600 node --import tsx bench/rotation.ts
//
// 1. local authority, one server: the root rotates (prepare, trust-both, switch, retire)
// 2. vault-intermediate (csr) on a persistent OpenBao, two replicas: the root rotates, an
//    intermediate rotates, then OpenBao is stopped for BENCH_OUTAGE_SECONDS under load and
//    started again (the intermediate in memory keeps signing; renewals retry).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PHASES } from "../src/rotation/state.js";
import { startOpenBao } from "../test/helpers/openbao.js";
import { startServerProcess, type ServerProcess } from "../test/helpers/server-process.js";
import { mountRoot, rootArgs, rotateTo, serversApply } from "../test/rotation/drive.js";
import { startPairs, type Pairs } from "../test/rotation/workload-pairs.js";

const PAIRS = Number(process.env["BENCH_PAIRS"] ?? 6);
const CERT_TTL = process.env["BENCH_CERT_TTL"] ?? "90s";
const OUTAGE = Number(process.env["BENCH_OUTAGE_SECONDS"] ?? 600);
const HOLD = Number(process.env["BENCH_PHASE_SECONDS"] ?? 10);
const dir = mkdtempSync(join(tmpdir(), "meshvault-bench-rotation-"));
const sleep = (s: number): Promise<void> => new Promise((r) => setTimeout(r, s * 1000));

const common = {
  certificates: { defaultTtl: CERT_TTL, maxTtl: CERT_TTL },
  servingCertificate: { ttl: "1h" },
  rotation: { pollInterval: "1s" },
  log: { level: "warn" },
};

async function rotate(servers: ServerProcess[], pairs: Pairs, env: NodeJS.ProcessEnv): Promise<void> {
  const args = rootArgs(servers, pairs.checks);
  for (const phase of PHASES) {
    const t0 = Date.now();
    const blocked = await rotateTo(phase, args, env, 30 * 60_000);
    pairs.phase = phase;
    await serversApply(servers, phase);
    console.log(
      `  ${phase}: taken after ${((Date.now() - t0) / 1000).toFixed(0)} s (${blocked.length} blocked tries)`,
    );
    await sleep(HOLD);
  }
}

function print(title: string, pairs: Pairs): number {
  console.log(`\n${title}: ${PAIRS} pairs, ${CERT_TTL} leaves`);
  console.log(pairs.report());
  return pairs.totals().failed;
}

let failed = 0;
try {
  {
    const s = await startServerProcess("bench-local", dir, { authority: { type: "local" }, ...common });
    const pairs = await startPairs({
      pairs: PAIRS,
      dir: join(dir, "pairs-local"),
      cas: [{ grpc: s.grpc, dataDir: s.dataDir, rootCertFile: join(s.dataDir, "root-cert.pem") }],
      certTtl: CERT_TTL,
      rootsPollMs: 1000,
    });
    pairs.run();
    await sleep(HOLD);
    console.log("local authority: rotating the root");
    await rotate([s], pairs, process.env);
    await pairs.stop();
    await s.stop();
    failed += print("local authority", pairs);
  }
  {
    const bao = await startOpenBao({ persistent: true });
    await mountRoot(bao, "bench root");
    const env = { ...process.env, VAULT_TOKEN: bao.rootToken };
    const cfg = {
      authority: {
        type: "vault-intermediate",
        mode: "csr",
        rootMount: "pki",
        ttl: `${Math.max(OUTAGE * 4, 300)}s`,
        renewAt: 0.5,
      },
      vault: { address: bao.addr, auth: { method: "token" } },
      ...common,
    };
    const replicas = await Promise.all(
      ["bench-vault-a", "bench-vault-b"].map((n) =>
        startServerProcess(n, dir, cfg, { VAULT_TOKEN: bao.rootToken }),
      ),
    );
    const pairs = await startPairs({
      pairs: PAIRS,
      dir: join(dir, "pairs-vault"),
      cas: replicas.map((s) => ({
        grpc: s.grpc,
        dataDir: s.dataDir,
        rootCertFile: join(s.dataDir, "root-cert.pem"),
      })),
      certTtl: CERT_TTL,
      rootsPollMs: 1000,
    });
    pairs.run();
    await sleep(HOLD);
    console.log("vault-intermediate, 2 replicas: rotating the root");
    await rotate(replicas, pairs, env);
    console.log(`vault-intermediate: OpenBao stopped for ${OUTAGE} s under load`);
    pairs.phase = "vault-down";
    await bao.halt();
    await sleep(OUTAGE);
    await bao.start();
    pairs.phase = "vault-back";
    await sleep(HOLD);
    await pairs.stop();
    for (const r of replicas) await r.stop();
    await bao.stop();
    failed += print("vault-intermediate on OpenBao, 2 replicas", pairs);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`\n${failed === 0 ? "0 failed handshakes or requests" : `${failed} FAILED`}`);
process.exit(failed === 0 ? 0 : 1);
