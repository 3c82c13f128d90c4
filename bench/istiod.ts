// meshvault against istiod's own CA, side by side (issue 11). One Go load generator
// (bench/go/loadgen) drives both with the same CSRs (built like istio-agent builds them,
// P-256 and RSA-2048) and the same RS256 service-account token, interleaved A B B A, and
// verifies every response (chain to the roots, SAN, the CSR's key, signatures). The baseline
// (bench/go/istiod-ca) is Istio's CreateCertificate server and CA code (util.GenCertFromCSR)
// with Istio's JWT authenticator, signing with the same plug-in CA files as meshvault.
// meshvault runs as users run it: `meshvault server` from the build, authority `files`.
//
// Also measured with the same generator: meshvault pinned to 1 core vs 2 cores (taskset), and
// OpenBao's pki sign/<role> called directly vs meshvault's vault-sign in front of it.
//
//   node --import tsx bench/istiod.ts                 quick: ~1.5 s per run, a few minutes
//   BENCH_MODE=full node --import tsx bench/istiod.ts  5 s per run, every row
//   BENCH_SECONDS=3 ...                                override the run length
//   BENCH_PARTS=ca,scaling,vault ...                   only these parts (default: all)
//   BENCH_MODE=smoke ...                               two short rows (the harness test)
// Needs the build (npm run build) and Go (scripts/ensure-bench-go.sh builds the Go peers).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import {
  goPeersDir,
  listenerPids,
  loadgen,
  NS,
  ISSUER,
  pluginCa,
  SA,
  serviceAccountToken,
  startIstiodCa,
  startMeshvault,
  stopAll,
  type Row,
  type RowResult,
  type Target,
} from "./istiod-peers.js";
import { fmt, table } from "./lib.js";
import { GRPC_SERVERS, serverConfigSchema } from "../src/config/schema.js";

const MODE = process.env["BENCH_MODE"] ?? "quick";
const FULL = MODE === "full";
/** smoke: one short row per CSR type, no scaling or Vault rows (test/bench-harness.test.ts). */
const SMOKE = MODE === "smoke";
/** Which parts run (default all): ca (meshvault vs istiod), scaling (taskset 1 vs 2 cores), vault. */
const PARTS = new Set((process.env["BENCH_PARTS"] ?? (SMOKE ? "ca" : "ca,scaling,vault")).split(","));
/** Only these rows of the main table, e.g. "p256/64/4,rsa2048/64/1" (CSR/callers/conns); all by default. */
const ROWS = process.env["BENCH_ROWS"]?.split(",");
const SECONDS = Number(process.env["BENCH_SECONDS"] ?? (FULL ? 5 : SMOKE ? 0.3 : 1.5));
const WARMUP = FULL ? 1 : 0.4;
const TIMING = { seconds: SECONDS, warmupSeconds: WARMUP };
const ratio = (a: number, b: number): string => `${fmt(a / b, 2)}`;
/** The CA API's gRPC server by default (config grpcServer), and the other one, compared in the same run. */
const DEFAULT_GRPC_SERVER = serverConfigSchema.parse({}).grpcServer;
const OTHER_GRPC_SERVER = GRPC_SERVERS.find((s) => s !== DEFAULT_GRPC_SERVER)!;

function printPairs(title: string, results: RowResult[], aName: string, bName: string): void {
  console.log(`\n${title}`);
  const rows: (string | number)[][] = [
    [
      "CSR",
      "callers",
      "conns",
      `${aName} certs/s`,
      `${bName} certs/s`,
      "ratio",
      `${aName} p50/p99 ms`,
      `${bName} p50/p99 ms`,
      `${aName} CPU us/cert`,
      `${bName} CPU us/cert`,
      "CPU ratio",
      "load",
    ],
  ];
  for (const r of results) {
    const a = r.results[r.a]!;
    const b = r.results[r.b]!;
    rows.push([
      r.csr,
      r.callers,
      r.conns,
      fmt(a.perSecond),
      fmt(b.perSecond),
      ratio(a.perSecond, b.perSecond),
      `${fmt(a.p50Ms, 2)}/${fmt(a.p99Ms, 2)}`,
      `${fmt(b.p50Ms, 2)}/${fmt(b.p99Ms, 2)}`,
      fmt(a.serverCpuUsPerCert),
      fmt(b.serverCpuUsPerCert),
      ratio(a.serverCpuUsPerCert, b.serverCpuUsPerCert),
      fmt(r.loadavg, 1),
    ]);
  }
  console.log(table(rows));
}

async function main(): Promise<void> {
  const started = performance.now();
  const bin = goPeersDir();
  const dir = mkdtempSync(join(tmpdir(), "meshvault-bench-istiod-"));
  try {
    const cores = availableParallelism();
    console.log(
      `meshvault vs istiod's CA (${MODE} mode): ${cores} cores, ${SECONDS}s per run, runs A B B A, ` +
        `one Go load generator (client CPU not in the server columns); load average at start ${loadavg()
          .map((l) => l.toFixed(1))
          .join(" ")}`,
    );
    const caDir = join(dir, "ca");
    execFileSync("mkdir", ["-p", caDir]);
    const rootsFile = pluginCa(caDir);
    const { jwksFile, token } = await serviceAccountToken(dir);
    const mvConfig = {
      authority: { type: "files", dir: caDir },
      authentication: { jwt: [{ issuer: ISSUER, audiences: ["istio-ca"], jwksFile }], localIssuer: false },
      // BENCH_WORKERS: the issuance workers of the compared server (default: one per core).
      ...(process.env["BENCH_WORKERS"] ? { workers: Number(process.env["BENCH_WORKERS"]) } : {}),
    };
    const mv = await startMeshvault(dir, "files", mvConfig);
    const mvOther = await startMeshvault(dir, `files-${OTHER_GRPC_SERVER}`, {
      ...mvConfig,
      grpcServer: OTHER_GRPC_SERVER,
    });
    const istiod = await startIstiodCa(bin, caDir, jwksFile);
    const grpcTarget = (port: number, pid: number): Target => ({
      kind: "grpc",
      addr: `127.0.0.1:${port}`,
      serverName: "localhost",
      rootsFile,
      token,
      pids: [pid],
    });
    const targets: Record<string, Target> = {
      meshvault: grpcTarget(mv.port, mv.pid),
      [OTHER_GRPC_SERVER]: grpcTarget(mvOther.port, mvOther.pid),
      istiod: grpcTarget(istiod.port, istiod.pid),
    };
    const rows: Row[] = [];
    for (const csr of ["p256", "rsa2048"] as const)
      for (const callers of SMOKE ? [4] : [1, 16, 64])
        for (const conns of SMOKE ? [2] : [1, 4])
          if (!ROWS || ROWS.includes(`${csr}/${callers}/${conns}`))
            rows.push({
              label: `${csr}/${callers}/${conns}`,
              csr,
              callers,
              conns,
              a: "meshvault",
              b: "istiod",
            });
    // The other gRPC server against the default one, right after each row above.
    const transportRows: Row[] = rows.map((r) => ({
      ...r,
      label: `${r.label}/${OTHER_GRPC_SERVER}`,
      a: OTHER_GRPC_SERVER,
      b: "meshvault",
    }));
    if (PARTS.has("ca")) {
      // A fresh Node server spends more CPU per certificate until the JIT has warmed its paths
      // (up to 40% in the first run): both meshvault servers get a discarded pass per CSR type first.
      loadgen(
        bin,
        targets,
        { seconds: SMOKE ? 0.2 : 2, warmupSeconds: 0 },
        [...new Set(rows.map((r) => r.csr))].map((csr) => ({
          label: `warm-up/${csr}`,
          csr,
          callers: 16,
          conns: 2,
          a: OTHER_GRPC_SERVER,
          b: "meshvault",
        })),
      );
      const all = loadgen(
        bin,
        targets,
        TIMING,
        rows.flatMap((r, i) => [r, transportRows[i]!]),
      );
      const main = all.filter((r) => r.a === "meshvault");
      printPairs(
        `CreateCertificate: meshvault (A, ${DEFAULT_GRPC_SERVER}) vs istiod's CA (B), gRPC + TLS`,
        main,
        "meshvault",
        "istiod",
      );
      const transport = all.filter((r) => r.a === OTHER_GRPC_SERVER);
      printPairs(
        `the CA API's gRPC server: meshvault grpcServer ${OTHER_GRPC_SERVER} (A) vs ${DEFAULT_GRPC_SERVER} (B), same run`,
        transport,
        OTHER_GRPC_SERVER,
        DEFAULT_GRPC_SERVER,
      );
      console.log(
        `${OTHER_GRPC_SERVER} CPU per certificate / istiod's (istiod from the row before): ` +
          transport
            .map((r, i) => {
              const istiod = main[i]!.results["istiod"]!;
              return `${r.csr}/${r.callers}/${r.conns} ${ratio(r.results[r.a]!.serverCpuUsPerCert, istiod.serverCpuUsPerCert)}`;
            })
            .join(", "),
      );
    }

    // 1 -> 2 cores: the same servers pinned with taskset (the generator is not pinned).
    if (cores >= 2 && PARTS.has("scaling")) {
      const mv1 = await startMeshvault(dir, "files-1cpu", mvConfig, "0");
      const mv2 = await startMeshvault(dir, "files-2cpu", mvConfig, "0,1");
      const mv2w0 = await startMeshvault(dir, "files-2cpu-w0", { ...mvConfig, workers: 0 }, "0,1");
      const is1 = await startIstiodCa(bin, caDir, jwksFile, "0");
      const is2 = await startIstiodCa(bin, caDir, jwksFile, "0,1");
      const scaleTargets = {
        "meshvault-1cpu": grpcTarget(mv1.port, mv1.pid),
        "meshvault-2cpu": grpcTarget(mv2.port, mv2.pid),
        "meshvault-2cpu-w0": grpcTarget(mv2w0.port, mv2w0.pid),
        "istiod-1cpu": grpcTarget(is1.port, is1.pid),
        "istiod-2cpu": grpcTarget(is2.port, is2.pid),
      };
      const scale = loadgen(bin, scaleTargets, TIMING, [
        { label: "mv", csr: "p256", callers: 64, conns: 4, a: "meshvault-2cpu", b: "meshvault-1cpu" },
        { label: "istiod", csr: "p256", callers: 64, conns: 4, a: "istiod-2cpu", b: "istiod-1cpu" },
        { label: "w0", csr: "p256", callers: 64, conns: 4, a: "meshvault-2cpu", b: "meshvault-2cpu-w0" },
      ]);
      const w = scale.find((r) => r.label === "w0")!;
      console.log(
        "\nscaling, P-256, 64 callers over 4 connections, server pinned with taskset (load generator shares the cores)",
      );
      console.log(
        table([
          [
            "server",
            "1 core certs/s",
            "2 cores certs/s",
            "2 cores / 1 core",
            "CPU us/cert 1 / 2 cores",
            "load",
          ],
          ...scale
            .filter((r) => r.label !== "w0")
            .map((r) => {
              const two = r.results[r.a]!;
              const one = r.results[r.b]!;
              return [
                r.label === "mv" ? "meshvault" : "istiod",
                fmt(one.perSecond),
                fmt(two.perSecond),
                `${fmt(two.perSecond / one.perSecond, 2)}x`,
                `${fmt(one.serverCpuUsPerCert)} / ${fmt(two.serverCpuUsPerCert)}`,
                fmt(r.loadavg, 1),
              ];
            }),
        ]),
      );
      const [on, off] = [w.results[w.a]!, w.results[w.b]!];
      console.log(
        `meshvault on 2 cores, issuance workers (default, ${cores}) vs workers: 0: ${fmt(on.perSecond)} vs ` +
          `${fmt(off.perSecond)} certs/s (${fmt(on.perSecond / off.perSecond, 2)}x), CPU ${fmt(on.serverCpuUsPerCert)} vs ` +
          `${fmt(off.serverCpuUsPerCert)} us/cert, p99 ${fmt(on.p99Ms, 1)} vs ${fmt(off.p99Ms, 1)} ms, load ${fmt(w.loadavg, 1)}`,
      );
    }

    if (PARTS.has("vault")) await vaultRows(bin, dir);
    console.log(
      `\n(${fmt((performance.now() - started) / 1000)} s; load average at end ${loadavg()
        .map((l) => l.toFixed(1))
        .join(" ")})`,
    );
  } finally {
    stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** OpenBao's sign/<role> directly vs vault-sign through meshvault, same generator and CSRs. */
async function vaultRows(bin: string, dir: string): Promise<void> {
  const { ROLE, approleLogin, setupPki, startVaultFixture, writePolicy } =
    await import("../test/authority/vault-fixture.js");
  const fx = await startVaultFixture(false);
  try {
    const { rootPem } = await setupPki(fx.admin);
    const rootsFile = join(dir, "vault-root.pem");
    writeFileSync(rootsFile, rootPem);
    await writePolicy(fx.admin, "bench", { [`pki_int/sign/${ROLE}`]: ["update"] });
    const approle = await approleLogin(fx, "bench", ["bench"]);
    const login = await fx.admin.write<unknown>(
      "auth/approle/login",
      {
        role_id: readFileSync(approle.roleIdFile, "utf8").trim(),
        secret_id: readFileSync(approle.secretIdFile, "utf8").trim(),
      },
      { noAuth: true },
    );
    const vaultToken = login!.auth!.client_token;
    const mv = await startMeshvault(dir, "vault-sign", {
      authority: { type: "vault-sign" },
      authentication: {
        jwt: [{ issuer: "https://kubernetes.default.svc.cluster.local", jwksFile: fx.jwksFile }],
        localIssuer: false,
      },
      vault: {
        address: fx.bao.addr,
        auth: { method: "approle", roleIdFile: approle.roleIdFile, secretIdFile: approle.secretIdFile },
      },
    });
    const token = await fx.token(NS, SA);
    const targets: Record<string, Target> = {
      "vault-sign": {
        kind: "grpc",
        addr: `127.0.0.1:${mv.port}`,
        serverName: "localhost",
        rootsFile,
        token,
        pids: [mv.pid],
      },
      openbao: {
        kind: "vault",
        url: `${fx.bao.addr}/v1/pki_int/sign/${ROLE}`,
        rootsFile,
        token: vaultToken,
        pids: listenerPids(Number(new URL(fx.bao.addr).port)),
      },
    };
    const rows: Row[] = [16, 64].map((callers) => ({
      label: `vault/${callers}`,
      csr: "p256",
      callers,
      conns: 4,
      a: "vault-sign",
      b: "openbao",
    }));
    const res = loadgen(bin, targets, TIMING, rows);
    printPairs(
      "vault-sign through meshvault (A) vs OpenBao pki_int/sign/<role> directly (B), P-256 CSRs",
      res,
      "vault-sign",
      "openbao",
    );
    console.log(
      "(server CPU: A counts meshvault only, its front end; B counts OpenBao, which also signs A's certificates)",
    );
  } finally {
    await fx.close();
  }
}

await main();
