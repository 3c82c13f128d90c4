// The root-rotation proof at bench scale, and a Vault outage soak. Not a test: it prints the
// requests (each a new mutual TLS handshake through two tunnels) attempted and failed per phase.
//
//   node --import tsx bench/rotation.ts
//   BENCH_PAIRS=8 BENCH_CERT_TTL=120s BENCH_OUTAGE_SECONDS=600 node --import tsx bench/rotation.ts
//   BENCH_PARTS=outage BENCH_OUTAGE_SECONDS=600 nice node --import tsx bench/rotation.ts
//
// rotation (BENCH_PARTS contains "rotation"):
// 1. local authority, one server: the root rotates (prepare, trust-both, switch, retire)
// 2. vault-intermediate (csr) on OpenBao, two replicas: the root rotates
// outage (BENCH_PARTS contains "outage"): one persistent OpenBao, one server per mode with
// BENCH_OUTAGE_PAIRS workload pairs each, all under load while OpenBao is stopped for
// BENCH_OUTAGE_SECONDS and started again:
// - vault-intermediate (csr), vault-kv, and local (whose rotation state is in Vault KV, so it
//   polls the stopped Vault too) keep issuing the pairs' short leaves: 0 failures expected;
// - vault-sign cannot sign without Vault: a CreateCertificate probe every second must fail
//   fast with UNAVAILABLE, and its agents (leaves outliving the outage, renewal due early in
//   it) keep serving valid certificates, retrying until Vault is back: 0 failed requests.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { status as grpcStatus } from "@grpc/grpc-js";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { mintLocalToken } from "../src/identity/local-issuer.js";
import { buildCsr } from "../src/pki/csr.js";
import { generateKeyPairFor } from "../src/pki/keys.js";
import { PHASES } from "../src/rotation/state.js";
import { VaultClient } from "../src/vault/index.js";
import { caClient } from "../test/helpers/ca-client.js";
import { cli } from "../test/helpers/cli.js";
import { startOpenBao } from "../test/helpers/openbao.js";
import { startServerProcess, type ServerProcess } from "../test/helpers/server-process.js";
import { CLI_MS, mountRoot, rootArgs, rotateTo, serversApply, storeKvCa } from "../test/rotation/drive.js";
import { startPairs, type Pairs } from "../test/rotation/workload-pairs.js";

const PAIRS = Number(process.env["BENCH_PAIRS"] ?? 6);
const OUTAGE_PAIRS = Number(process.env["BENCH_OUTAGE_PAIRS"] ?? 2);
const CERT_TTL = process.env["BENCH_CERT_TTL"] ?? "90s";
const OUTAGE = Number(process.env["BENCH_OUTAGE_SECONDS"] ?? 600);
const HOLD = Number(process.env["BENCH_PHASE_SECONDS"] ?? 10);
const PARTS = new Set((process.env["BENCH_PARTS"] ?? "rotation,outage").split(","));
const dir = mkdtempSync(join(tmpdir(), "meshvault-bench-rotation-"));
/** Generous: a server process starts slowly on a loaded machine (tsx compiles on the fly). */
const SERVER_READY_MS = 180_000;
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

function print(title: string, pairs: Pairs, pairCount = PAIRS, ttl = CERT_TTL): number {
  console.log(`\n${title}: ${pairCount} pairs, ${ttl} leaves`);
  console.log(pairs.report());
  return pairs.totals().failed;
}

async function rotation(): Promise<number> {
  let failed = 0;
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
    const bao = await startOpenBao();
    await mountRoot(bao, "bench root");
    const env = { ...process.env, VAULT_TOKEN: bao.rootToken };
    const cfg = {
      authority: { type: "vault-intermediate", mode: "csr", rootMount: "pki", ttl: "1h", renewAt: 0.5 },
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
    await pairs.stop();
    for (const r of replicas) await r.stop();
    await bao.stop();
    failed += print("vault-intermediate on OpenBao, 2 replicas", pairs);
  }
  return failed;
}

interface OutageMode {
  name: string;
  config: Record<string, unknown>;
  certTtl: string;
  graceRatio?: number;
}

/** One CreateCertificate against `server` (a workload's CSR and token): the gRPC code, and how long it took. */
function caProbe(server: ServerProcess, roots: string, token: string) {
  const client = caClient(server.grpc, roots);
  const csr = buildCsr(generateKeyPairFor("ec-p256").privateKey, {
    uris: ["spiffe://cluster.local/ns/default/sa/probe"],
  });
  return {
    async once(): Promise<{ code: string; ms: number }> {
      const t0 = Date.now();
      let code = "OK";
      try {
        await client.create(csr, { token, validity: 60 });
      } catch (err) {
        code = grpcCodeName((err as { code?: number }).code);
      }
      return { code, ms: Date.now() - t0 };
    },
    close: () => client.close(),
  };
}

/** The probe once a second until stopped: codes and the slowest answer. */
function probeLoop(probe: ReturnType<typeof caProbe>) {
  const codes = new Map<string, number>();
  let slowest = 0;
  let calls = 0;
  let on = true;
  const loop = (async () => {
    while (on) {
      calls++;
      const { code, ms } = await probe.once();
      codes.set(code, (codes.get(code) ?? 0) + 1);
      slowest = Math.max(slowest, ms);
      await sleep(1);
    }
  })();
  return {
    stop: async () => {
      on = false;
      await loop;
      return { calls, codes, slowest };
    },
  };
}

const grpcCodeName = (c: number | undefined): string =>
  c === undefined ? "no code" : (grpcStatus[c] ?? String(c));

async function outageSoak(): Promise<number> {
  const bao = await startOpenBao({ persistent: true });
  const env = { ...process.env, VAULT_TOKEN: bao.rootToken };
  const vault = { address: bao.addr, auth: { method: "token" } };
  const signAuthority = { type: "vault-sign", mount: "pki_int", role: "meshvault-workload" };
  // `meshvault vault setup` mounts the root (pki), pki_int and the signing role, as a user would.
  const setupFile = join(dir, "vault-sign-setup.yaml");
  writeFileSync(setupFile, stringify({ dataDir: join(dir, "setup"), authority: signAuthority, vault }));
  const setup = await cli(["vault", "setup", "-c", setupFile], env, CLI_MS);
  if (setup.code !== 0) throw new Error(`meshvault vault setup failed:\n${setup.out}${setup.err}`);
  const admin = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  const kv = "vault:secret/data/bench/kv-ca";
  await storeKvCa(admin, kv, { rootMount: "pki", keyMount: "pki_kv", commonName: "bench kv CA" });
  admin.close();
  // vault-sign leaves outlive the outage; renewal comes due at 10 % of their life, early in it.
  const signTtl = `${Math.round(OUTAGE * 1.5) + 120}s`;
  const modes: OutageMode[] = [
    {
      name: "vault-intermediate",
      config: {
        authority: {
          type: "vault-intermediate",
          mode: "csr",
          rootMount: "pki",
          ttl: `${Math.max(OUTAGE * 4, 300)}s`,
          renewAt: 0.5,
        },
      },
      certTtl: CERT_TTL,
    },
    {
      name: "vault-kv",
      config: {
        authority: {
          type: "vault-kv",
          certificate: `${kv}#certificate`,
          privateKey: `${kv}#privateKey`,
          root: `${kv}#root`,
          pollInterval: "5s",
        },
      },
      certTtl: CERT_TTL,
    },
    {
      name: "local",
      config: {
        authority: { type: "local" },
        rotation: { state: "vault:secret/data/meshvault/root-rotation/bench-local", pollInterval: "1s" },
      },
      certTtl: CERT_TTL,
    },
    {
      name: "vault-sign",
      config: { authority: signAuthority, certificates: { defaultTtl: signTtl, maxTtl: signTtl } },
      certTtl: signTtl,
      graceRatio: 0.9,
    },
  ];
  const runs: { mode: OutageMode; server: ServerProcess; pairs: Pairs }[] = [];
  let stopped = false;
  try {
    for (const mode of modes) {
      const server = await startServerProcess(
        `outage-${mode.name}`,
        dir,
        { vault, ...common, ...mode.config },
        { VAULT_TOKEN: bao.rootToken },
        SERVER_READY_MS,
      );
      const pairs = await startPairs({
        pairs: OUTAGE_PAIRS,
        dir: join(dir, `pairs-outage-${mode.name}`),
        cas: [
          { grpc: server.grpc, dataDir: server.dataDir, rootCertFile: join(server.dataDir, "root-cert.pem") },
        ],
        certTtl: mode.certTtl,
        rootsPollMs: 1000,
        ...(mode.graceRatio ? { graceRatio: mode.graceRatio } : {}),
      });
      runs.push({ mode, server, pairs });
      pairs.run();
    }
    const sign = runs.find((r) => r.mode.name === "vault-sign")!.server;
    const signRoots = await (await fetch(`http://${sign.http}/roots`)).text();
    const probeToken = await mintLocalToken({
      dataDir: sign.dataDir,
      trustDomain: "cluster.local",
      namespace: "default",
      serviceAccount: "probe",
      audiences: ["istio-ca"],
      ttlSeconds: OUTAGE + 3600,
    });
    const probe = caProbe(sign, signRoots, probeToken);
    const first = await probe.once();
    if (first.code !== "OK") throw new Error(`the vault-sign probe fails with Vault up: ${first.code}`);
    await sleep(HOLD);
    const before = runs.map((r) => r.pairs.certs());
    console.log(`\noutage soak: OpenBao stopped for ${OUTAGE} s under load (${runs.length} servers)`);
    for (const r of runs) r.pairs.phase = "vault-down";
    const loads: number[] = [];
    await bao.halt();
    const down = Date.now();
    const probing = probeLoop(probe);
    while (Date.now() - down < OUTAGE * 1000) {
      loads.push(loadavg()[0]!);
      await sleep(Math.min(10, OUTAGE - (Date.now() - down) / 1000 + 0.01));
    }
    const during = runs.map((r) => r.pairs.certs());
    const probed = await probing.stop();
    await bao.start();
    const up = Date.now();
    for (const r of runs) r.pairs.phase = "vault-back";
    // vault-sign again: the first CreateCertificate that succeeds, and the agents' next renewal.
    const signRun = runs.find((r) => r.mode.name === "vault-sign")!;
    let recovered: number | undefined;
    let lastCode = "";
    const until = Date.now() + 120_000;
    while (Date.now() < until) {
      if (recovered === undefined) {
        lastCode = (await probe.once()).code;
        if (lastCode === "OK") recovered = Date.now() - up;
      }
      if (recovered !== undefined && signRun.pairs.certs().issued > during[runs.indexOf(signRun)]!.issued)
        break;
      await sleep(1);
    }
    probe.close();
    await sleep(HOLD);
    const after = runs.map((r) => r.pairs.certs());
    await Promise.all(runs.map((r) => r.pairs.stop()));
    stopped = true;
    let failed = 0;
    for (const [i, r] of runs.entries()) {
      failed += print(`outage, ${r.mode.name}`, r.pairs, OUTAGE_PAIRS, r.mode.certTtl);
      const b = before[i]!;
      const d = during[i]!;
      const a = after[i]!;
      console.log(
        `  agents' CSRs while Vault was down: ${d.issued - b.issued} issued, ${d.failures - b.failures} failed; ` +
          `after: ${a.issued - d.issued} issued, ${a.failures - d.failures} failed; ` +
          `least time left on a held certificate at the end of the outage: ${d.minSecondsLeft} s`,
      );
      if (r.mode.name === "vault-sign") {
        if (d.minSecondsLeft <= 0) {
          console.log("  FAILED: a vault-sign agent's certificate expired during the outage");
          failed++;
        }
      } else if (d.failures - b.failures > 0) {
        console.log(`  FAILED: ${r.mode.name} refused CSRs while Vault was down`);
        failed += d.failures - b.failures;
      }
    }
    const codes = [...probed.codes].map(([c, n]) => `${n} x ${c}`).join(", ");
    console.log(
      `\nvault-sign CreateCertificate while Vault was down: ${probed.calls} calls: ${codes}; slowest ${probed.slowest} ms; ` +
        `first success ${recovered === undefined ? `never within 120 s (last: ${lastCode})` : `${(recovered / 1000).toFixed(1)} s`} after OpenBao started`,
    );
    if (probed.codes.size !== 1 || !probed.codes.has("UNAVAILABLE") || probed.slowest > 5000) {
      console.log("  FAILED: expected every call to fail fast (< 5 s) with UNAVAILABLE");
      failed++;
    }
    if (recovered === undefined) failed++;
    const avg = loads.reduce((x, y) => x + y, 0) / Math.max(1, loads.length);
    console.log(
      `load average (1 min) during the outage: min ${Math.min(...loads).toFixed(2)}, mean ${avg.toFixed(2)}, max ${Math.max(...loads).toFixed(2)}`,
    );
    return failed;
  } finally {
    if (!stopped) await Promise.all(runs.map((r) => r.pairs.stop()));
    for (const r of runs) await r.server.stop();
    await bao.stop();
  }
}

let failed = 0;
try {
  if (PARTS.has("rotation")) failed += await rotation();
  if (PARTS.has("outage")) failed += await outageSoak();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`\n${failed === 0 ? "0 failed handshakes or requests" : `${failed} FAILED`}`);
process.exit(failed === 0 ? 0 : 1);
