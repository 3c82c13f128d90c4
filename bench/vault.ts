// Vault-backed authorities against their peers, measured in the same run on one machine:
//  1. vault-sign through meshvault's full path (gRPC + TLS, caller JWT check, CSR checks,
//     Vault sign, chain check) next to calling OpenBao's `<mount>/sign/<role>` directly
//     over keep-alive HTTP with the same concurrency. Goal: our overhead <= 10%.
//  2. vault-intermediate next to the embedded `local` authority: both sign in process, so
//     they should be equal; measured in process and through gRPC.
// Run: node --import tsx bench/vault.ts   (BENCH_SECONDS, BENCH_CONCURRENCY to tune)
import { Agent, request } from "node:http";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Authority } from "../src/authority/authority.js";
import { createAuthority } from "../src/authority/factory.js";
import { LocalAuthority } from "../src/authority/local.js";
import type { ServerConfig } from "../src/config/schema.js";
import { vaultSectionSchema as serverVaultSchema } from "../src/config/vault-schema.js";
import { silentLogger } from "../src/log/logger.js";
import { buildCsr, parseCsr } from "../src/pki/csr.js";
import { generateKeyPairFor } from "../src/pki/keys.js";
import { workloadId } from "../src/pki/spiffe.js";
import { startCaServer, type CaServerHandle } from "../src/server/run.js";
import { caClient } from "../test/helpers/ca-client.js";
import {
  ROLE,
  TD,
  approleLogin,
  serverConfig,
  setupPki,
  startVaultFixture,
  writePolicy,
} from "../test/authority/vault-fixture.js";

const SECONDS = Number(process.env["BENCH_SECONDS"] ?? 3);
const CONCURRENCY = Number(process.env["BENCH_CONCURRENCY"] ?? 16);
const ID = workloadId(TD, "default", "sleep");

interface Rate {
  perSecond: number;
  p50: number;
  p99: number;
}

/** `fn` for about SECONDS, `concurrency` at a time, after a short warm-up. */
async function measure(fn: () => Promise<unknown> | unknown, concurrency: number): Promise<Rate> {
  const run = async (ms: number): Promise<{ n: number; lat: number[]; s: number }> => {
    const t0 = performance.now();
    const end = t0 + ms;
    const lat: number[] = [];
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          const t = performance.now();
          await fn();
          lat.push(performance.now() - t);
        }
      }),
    );
    return { n: lat.length, lat, s: (performance.now() - t0) / 1000 };
  };
  await run(500);
  const { n, lat, s } = await run(SECONDS * 1000);
  lat.sort((a, b) => a - b);
  const pct = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN;
  return { perSecond: n / s, p50: pct(0.5), p99: pct(0.99) };
}

/** The `vault:` section as loadServerConfig produced it for the server (address filled in). */
function signServerVault(vault: Record<string, unknown>, address: string): ServerConfig["vault"] {
  return serverVaultSchema.parse({ address, ...vault });
}

const fmt = (n: number, d = 0): string =>
  n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });

function table(rows: (string | number)[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((c, i) => String(c).padEnd(w[i]!)).join("  ")).join("\n");
}

const row = (name: string, r: Rate, note = ""): (string | number)[] => [
  name,
  fmt(r.perSecond),
  fmt(r.p50, 2),
  fmt(r.p99, 2),
  note,
];

// EC P-256 CSRs, as Vault's published PKI numbers use.
const csrs = Array.from({ length: 16 }, () =>
  buildCsr(generateKeyPairFor("ec-p256").privateKey, { subject: { organization: "" }, uris: [ID.uri] }),
);
let next = 0;
const nextCsr = (): string => csrs[next++ % csrs.length]!;

async function main(): Promise<void> {
  const fx = await startVaultFixture(false);
  const servers: CaServerHandle[] = [];
  const authorities: Authority[] = [];
  const dataDir = mkdtempSync(join(tmpdir(), "meshvault-bench-vault-"));
  try {
    await setupPki(fx.admin);
    await writePolicy(fx.admin, "bench", {
      [`pki_int/sign/${ROLE}`]: ["update"],
      "pki/root/sign-intermediate": ["update"],
    });
    const approle = await approleLogin(fx, "bench", ["bench"]);
    const vault = {
      auth: { method: "approle", roleIdFile: approle.roleIdFile, secretIdFile: approle.secretIdFile },
    };
    const token = await fx.token("default", "sleep");
    console.log(
      `meshvault Vault authorities vs peers: OpenBao dev server at ${fx.bao.addr}, EC P-256 CSRs, ` +
        `${CONCURRENCY} concurrent callers, ${SECONDS}s per measurement\n`,
    );

    // ---- 1. vault-sign vs OpenBao sign/<role> directly ----
    // The baseline uses a token from the same approle login (same policy evaluation in
    // Vault; a root token skips the ACL check and would flatter the baseline) and the same body.
    const login = await fx.admin.write(
      "auth/approle/login",
      {
        role_id: readFileSync(approle.roleIdFile, "utf8").trim(),
        secret_id: readFileSync(approle.secretIdFile, "utf8").trim(),
      },
      { noAuth: true },
    );
    const benchToken = login!.auth!.client_token;
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const signDirect = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const body = JSON.stringify({
          csr: nextCsr(),
          uri_sans: ID.uri,
          ttl: "3600s",
          exclude_cn_from_sans: true,
          format: "pem",
        });
        const req = request(
          `${fx.bao.addr}/v1/pki_int/sign/${ROLE}`,
          {
            method: "POST",
            agent,
            headers: {
              "X-Vault-Token": benchToken,
              "Content-Type": "application/json",
              "Content-Length": Buffer.byteLength(body),
            },
          },
          (res) => {
            res.resume();
            res.on("end", () =>
              res.statusCode === 200 ? resolve() : reject(new Error(`sign answered ${res.statusCode}`)),
            );
          },
        );
        req.on("error", reject);
        req.end(body);
      });
    const signServer = await startCaServer(serverConfig(fx, "bench-sign", { type: "vault-sign" }, vault), {
      log: silentLogger(),
      defaultMetrics: false,
    });
    await signServer.firstAttempt;
    servers.push(signServer);
    const signClient = caClient(`127.0.0.1:${signServer.grpcPort}`, signServer.rootsPem());
    const viaMeshvault = (): Promise<unknown> => signClient.create(nextCsr(), { token, validity: 3600 });

    // Interleaved twice (direct, ours, direct, ours) so drift in the machine's load hits both alike.
    const direct1 = await measure(signDirect, CONCURRENCY);
    const ours1 = await measure(viaMeshvault, CONCURRENCY);
    const direct2 = await measure(signDirect, CONCURRENCY);
    const ours2 = await measure(viaMeshvault, CONCURRENCY);
    const avg = (a: Rate, b: Rate): Rate => ({
      perSecond: (a.perSecond + b.perSecond) / 2,
      p50: (a.p50 + b.p50) / 2,
      p99: (a.p99 + b.p99) / 2,
    });
    // The authority alone (no gRPC/TLS front end, which every authority shares): its own cost.
    const signAuthority = createAuthority(
      serverConfig(fx, "bench-sign-inproc", { type: "vault-sign" }, vault).authority,
      { trustDomain: TD, dataDir, log: silentLogger(), vault: signServerVault(vault, fx.bao.addr) },
    );
    authorities.push(signAuthority);
    await signAuthority.start();
    const parsedCsrs = csrs.map((c) => parseCsr(c));
    const authorityOnly = await measure(
      () => signAuthority.sign({ csr: parsedCsrs[next++ % parsedCsrs.length]!, ttlSeconds: 3600 }, ID),
      CONCURRENCY,
    );
    const direct = avg(direct1, direct2);
    const ours = avg(ours1, ours2);
    const overhead = (1 - ours.perSecond / direct.perSecond) * 100;
    signClient.close();
    agent.destroy();

    // ---- 2. vault-intermediate vs local ----
    const intCfg = serverConfig(fx, "bench-int", { type: "vault-intermediate", mode: "csr" }, vault);
    const intermediate = createAuthority(intCfg.authority, {
      trustDomain: TD,
      dataDir,
      log: silentLogger(),
      vault: intCfg.vault,
    });
    const local = new LocalAuthority({ dataDir, trustDomain: TD, keyAlgorithm: "ec-p256" });
    authorities.push(intermediate, local);
    await intermediate.start();
    await local.start();
    const parsed = parsedCsrs;
    const inProcess = (a: Authority) => (): Promise<unknown> =>
      a.sign({ csr: parsed[next++ % parsed.length]!, ttlSeconds: 3600 }, ID);
    const intIn = await measure(inProcess(intermediate), 1);
    const localIn = await measure(inProcess(local), 1);

    const intServer = await startCaServer(intCfg, { log: silentLogger(), defaultMetrics: false });
    await intServer.firstAttempt;
    servers.push(intServer);
    const localServer = await startCaServer(
      serverConfig(fx, "bench-local", { type: "local", keyAlgorithm: "ec-p256" }, vault),
      { log: silentLogger(), defaultMetrics: false },
    );
    await localServer.firstAttempt;
    servers.push(localServer);
    const grpcRate = async (s: CaServerHandle): Promise<Rate> => {
      const c = caClient(`127.0.0.1:${s.grpcPort}`, s.rootsPem());
      try {
        return await measure(() => c.create(nextCsr(), { token, validity: 3600 }), CONCURRENCY);
      } finally {
        c.close();
      }
    };
    const intGrpc = await grpcRate(intServer);
    const localGrpc = await grpcRate(localServer);

    console.log(
      table([
        ["measurement", "certs/s", "p50 ms", "p99 ms", ""],
        row("OpenBao pki_int/sign/<role>, direct HTTP", direct, "baseline (avg of 2 runs)"),
        row("vault-sign via meshvault gRPC", ours, `overhead ${fmt(overhead, 1)}% (goal <= 10%)`),
        row(
          "vault-sign authority alone, in process",
          authorityOnly,
          `overhead ${fmt((1 - authorityOnly.perSecond / direct.perSecond) * 100, 1)}%`,
        ),
        ["", "", "", "", ""],
        row("local authority, in process", localIn, "baseline"),
        row(
          "vault-intermediate, in process",
          intIn,
          `${fmt((intIn.perSecond / localIn.perSecond) * 100, 0)}% of local`,
        ),
        row("local authority via gRPC", localGrpc, "baseline"),
        row(
          "vault-intermediate via gRPC",
          intGrpc,
          `${fmt((intGrpc.perSecond / localGrpc.perSecond) * 100, 0)}% of local`,
        ),
      ]),
    );
    console.log(
      `\nvault-sign runs: direct ${fmt(direct1.perSecond)} / ${fmt(direct2.perSecond)}, ` +
        `meshvault ${fmt(ours1.perSecond)} / ${fmt(ours2.perSecond)} certs/s. Both share this machine's CPUs ` +
        `with OpenBao, so meshvault's own CPU use shows up as overhead.`,
    );
  } finally {
    for (const s of servers) await s.close().catch(() => undefined);
    for (const a of authorities) await a.close().catch(() => undefined);
    await fx.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
