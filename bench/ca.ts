// Issue throughput of the CA (issue 2, item 7), every number next to the raw crypto limit
// measured in the same run: in-process signing (hand-written DER vs the @peculiar/x509 oracle),
// bearer-token verification (node:crypto fast path vs the jose oracle), the whole
// CreateCertificate policy path, and the full gRPC+TLS path at 1, 16 and 64 concurrent callers
// with the server in its own process. The gRPC rows also give each side's CPU per certificate,
// because on a small machine the grpc-js load generator competes with the server for the cores.
//
//   BENCH_SECONDS=2 node --import tsx bench/ca.ts      (about 30 s)
import "reflect-metadata";
import { spawn } from "node:child_process";
import { sign, webcrypto } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import * as x509 from "@peculiar/x509";
import { parseCsr, buildCsr } from "../src/pki/csr.js";
import { generateKeyPairFor } from "../src/pki/keys.js";
import { issueLeaf } from "../src/pki/issue.js";
import { workloadId } from "../src/pki/spiffe.js";
import { createCertificate, type CaServiceDeps } from "../src/server/ca-service.js";
import { LocalAuthority } from "../src/authority/local.js";
import { ensureLocalIssuer, localIssuerName, mintLocalToken } from "../src/identity/local-issuer.js";
import { JwtAuthenticator } from "../src/identity/jwt.js";
import { authenticateCaller } from "../src/identity/chain-of-authenticators.js";
import { buildAuthenticators } from "../src/server/run.js";
import { loadServerConfig } from "../src/config/load.js";
import { silentLogger } from "../src/log/logger.js";
import { caClient } from "../test/helpers/ca-client.js";
import { fmt, measure, pct, percentile, table } from "./lib.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const TARGET_GRPC_PER_SECOND = 10_000;
const TARGET_P99_MS_AT_64 = 20;
const TARGET_INPROC_SHARE = 0.5;

const dir = mkdtempSync(join(tmpdir(), "meshvault-bench-"));
const cores = availableParallelism();

// A pool of RSA-2048 CSRs, as istio-agent sends by default.
const id = workloadId("cluster.local", "default", "bench");
const csrs = Array.from({ length: 16 }, () =>
  buildCsr(generateKeyPairFor("rsa-2048").privateKey, { subject: { organization: "" }, uris: [id.uri] }),
);
let next = 0;
const nextCsr = (): string => csrs[next++ % csrs.length]!;

interface RawLimit {
  /** verify RSA-2048 (the CSR) + sign P-256 (the leaf), per second on all cores. */
  issue: number;
  /** the same plus verifying an ES256 bearer token, per second on all cores. */
  withToken: number;
}

// 1. Raw crypto limit: Node crypto only, one worker thread per core.
async function rawLimit(): Promise<RawLimit> {
  const src = `
    const { parentPort, workerData: w } = require("node:worker_threads");
    const { createPrivateKey, createPublicKey, sign, verify } = require("node:crypto");
    const ca = createPrivateKey(w.caKey), rsa = createPublicKey(w.rsaPub), jwt = createPublicKey(w.jwtPub);
    const data = Buffer.alloc(600, 7), sig = Buffer.from(w.sig, "base64"), jsig = Buffer.from(w.jsig, "base64");
    // Both variants in alternating 50 ms slices, so a burst of other load hits them alike.
    const n = [0, 0], t = [0, 0];
    const end = Date.now() + 2 * w.ms;
    for (let k = 0; Date.now() < end; k ^= 1) {
      const t0 = performance.now(), stop = t0 + 50;
      while (performance.now() < stop) {
        verify("sha256", data, rsa, sig);
        sign("sha256", data, ca);
        if (k) verify("sha256", data, { key: jwt, dsaEncoding: "ieee-p1363" }, jsig);
        n[k]++;
      }
      t[k] += performance.now() - t0;
    }
    parentPort.postMessage([(n[0] * 1000) / t[0], (n[1] * 1000) / t[1]]);`;
  const ca = generateKeyPairFor("ec-p256");
  const rsa = generateKeyPairFor("rsa-2048");
  const jwt = generateKeyPairFor("ec-p256");
  const data = Buffer.alloc(600, 7);
  const workerData = {
    caKey: ca.privateKey.export({ type: "pkcs8", format: "pem" }),
    rsaPub: rsa.publicKey.export({ type: "spki", format: "pem" }),
    jwtPub: jwt.publicKey.export({ type: "spki", format: "pem" }),
    sig: sign("sha256", data, rsa.privateKey).toString("base64"),
    jsig: sign("sha256", data, { key: jwt.privateKey, dsaEncoding: "ieee-p1363" }).toString("base64"),
    ms: SECONDS * 1000,
  };
  const counts = await Promise.all(
    Array.from(
      { length: cores },
      () =>
        new Promise<[number, number]>((resolve, reject) => {
          const w = new Worker(src, { eval: true, workerData });
          w.once("message", (rates: [number, number]) => resolve(rates));
          w.once("error", reject);
        }),
    ),
  );
  const sum = (i: 0 | 1) => counts.reduce((a, c) => a + c[i], 0);
  return { issue: sum(0), withToken: sum(1) };
}

async function main(): Promise<void> {
  const started = performance.now();
  console.log(
    `meshvault CA benchmark: ${cores} cores, ${SECONDS}s per measurement, RSA-2048 CSRs, P-256 CA, ES256 tokens` +
      ` (load average at start ${loadavg()[0]!.toFixed(1)}: other work on this machine skews absolute numbers; compare ratios)\n`,
  );
  const limit = await rawLimit();
  const perCore = limit.issue / cores;
  const perCoreTok = limit.withToken / cores;
  console.log(
    table([
      ["raw crypto limit (Node crypto, all cores)", "ops/s", "per core"],
      ["verify RSA-2048 CSR + sign P-256 leaf", fmt(limit.issue), fmt(perCore)],
      ["  + verify ES256 bearer token", fmt(limit.withToken), fmt(perCoreTok)],
    ]),
  );

  const authority = new LocalAuthority({ dataDir: join(dir, "inproc"), trustDomain: "cluster.local" });
  await authority.start();
  const material = authority.current()!;

  // 2a. Hand-written path: parse+verify CSR, issue leaf (one core).
  const hand = await measure(
    () => {
      const csr = parseCsr(nextCsr());
      issueLeaf(material.signer, { spki: csr.spki, spiffeId: id.uri, ttlSeconds: 86400 });
    },
    { seconds: SECONDS },
  );

  // 2b. Library path (the oracle, test/bench-oracle.test.ts): @peculiar/x509 parse + verify CSR, same leaf.
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const caCert = new x509.X509Certificate(material.signer.cert.pem);
  const caKey = await webcrypto.subtle.importKey(
    "pkcs8",
    material.signer.key.export({ type: "pkcs8", format: "der" }),
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign"],
  );
  const lib = await measure(
    async () => {
      const req = new x509.Pkcs10CertificateRequest(nextCsr());
      if (!(await req.verify())) throw new Error("CSR does not verify");
      const now = Date.now();
      await x509.X509CertificateGenerator.create({
        serialNumber: "01" + Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString("hex"),
        subject: "",
        issuer: caCert.subject,
        notBefore: new Date(now - 120_000),
        notAfter: new Date(now + 86400_000),
        publicKey: await req.publicKey.export(),
        signingKey: caKey,
        signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
        extensions: [
          new x509.KeyUsagesExtension(
            x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
            true,
          ),
          new x509.ExtendedKeyUsageExtension(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]),
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.AuthorityKeyIdentifierExtension(Buffer.from(material.signer.keyId).toString("hex")),
          new x509.SubjectAlternativeNameExtension([{ type: "url", value: id.uri }], true),
        ],
      });
    },
    { seconds: SECONDS },
  );

  // 2c. Bearer-token verification: node:crypto fast path vs jose (the oracle, test/identity/jwt-fast-path.test.ts).
  const inprocDir = join(dir, "inproc");
  const token = await mintLocalToken({
    dataDir: inprocDir,
    trustDomain: "cluster.local",
    namespace: "default",
    serviceAccount: "bench",
  });
  const issuerFiles = await ensureLocalIssuer(inprocDir);
  const jwtAuth = (joseOnly: boolean) =>
    new JwtAuthenticator({
      trustDomain: "cluster.local",
      issuer: localIssuerName("cluster.local"),
      jwks: { file: issuerFiles.jwksFile },
      joseOnly,
    });
  const bearer = { authorization: `Bearer ${token}`, peerCertificates: [] };
  const fastAuth = jwtAuth(false);
  const joseAuth = jwtAuth(true);
  const jwtFast = await measure(() => fastAuth.authenticate(bearer), { seconds: SECONDS });
  const jwtJose = await measure(() => joseAuth.authenticate(bearer), { seconds: SECONDS });

  // 2d. Whole CreateCertificate policy path in-process (authenticate, policy, parse, sign).
  const cfg = loadServerConfig({ env: {}, overrides: { dataDir: inprocDir } });
  const auths = await buildAuthenticators(cfg, authority, silentLogger());
  const deps: CaServiceDeps = {
    authority,
    authenticate: (c) => authenticateCaller(auths, c),
    policy: {
      trustDomain: "cluster.local",
      defaultTtlSeconds: 86400,
      maxTtlSeconds: 90 * 86400,
      allowCommonName: false,
      trustedNodeAccounts: new Set(),
    },
  };
  const policyPath = await measure(
    () => createCertificate(deps, { csr: nextCsr(), validityDuration: 0 }, bearer),
    {
      seconds: SECONDS,
      concurrency: 8,
    },
  );

  console.log("\nin-process, one core");
  console.log(
    table([
      ["path", "ops/s", "CPU us/op", "vs raw limit/core", "vs raw incl. token/core", "vs oracle"],
      [
        "hand-written DER (parse+verify CSR, issue)",
        fmt(hand.perSecond),
        fmt(hand.cpuUsPerOp),
        pct(hand.perSecond, perCore),
        "",
        `${fmt(hand.perSecond / lib.perSecond, 1)}x`,
      ],
      [
        "@peculiar/x509 library (oracle)",
        fmt(lib.perSecond),
        fmt(lib.cpuUsPerOp),
        pct(lib.perSecond, perCore),
        "",
        "1x",
      ],
      [
        "ES256 token verify, node:crypto fast path",
        fmt(jwtFast.perSecond),
        fmt(jwtFast.cpuUsPerOp),
        "",
        "",
        `${fmt(jwtFast.perSecond / jwtJose.perSecond, 1)}x`,
      ],
      ["ES256 token verify, jose (oracle)", fmt(jwtJose.perSecond), fmt(jwtJose.cpuUsPerOp), "", "", "1x"],
      [
        "full policy path (token + CSR + issue), 8 in flight",
        fmt(policyPath.perSecond),
        fmt(policyPath.cpuUsPerOp),
        pct(policyPath.perSecond, perCore),
        pct(policyPath.perSecond, perCoreTok),
        "",
      ],
    ]),
  );
  if (fastAuth.verified.jose !== 0) throw new Error("benchmark tokens should take the JWT fast path");

  // 3. gRPC + TLS: server in its own process; the load generator (grpc-js, 4 channels) here.
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(import.meta.dirname, "ca-server-process.ts"), join(dir, "grpc")],
    { stdio: ["ignore", "pipe", "inherit", "ipc"] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    let buf = "";
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      const m = buf.match(/READY (\d+)/);
      if (m) resolve(Number(m[1]));
    });
    child.once("exit", (c) => reject(new Error(`server exited ${c}`)));
  });
  const serverCpu = () =>
    new Promise<number>((resolve) => {
      child.once("message", (m: { cpu: NodeJS.CpuUsage }) => resolve(m.cpu.user + m.cpu.system));
      child.send("cpu");
    });
  const roots = readFileSync(join(dir, "grpc", "root-cert.pem"), "utf8");
  const gtoken = await mintLocalToken({
    dataDir: join(dir, "grpc"),
    trustDomain: "cluster.local",
    namespace: "default",
    serviceAccount: "bench",
  });
  const rows: (string | number)[][] = [
    [
      "callers",
      "certs/s",
      "p50 ms",
      "p99 ms",
      "server CPU us/cert",
      "client CPU us/cert",
      "vs raw limit",
      "vs raw incl. token",
      "server alone, all cores*",
    ],
  ];
  const clients = Array.from({ length: 4 }, () => caClient(`127.0.0.1:${port}`, roots));
  const grpc: Record<number, { perSecond: number; p99: number }> = {};
  for (const conc of [1, 16, 64]) {
    let i = 0;
    const call = () => clients[i++ % clients.length]!.create(nextCsr(), { token: gtoken });
    await measure(call, { seconds: 0.3, concurrency: conc, warmup: 0 });
    const s0 = await serverCpu();
    const r = await measure(call, { seconds: SECONDS, concurrency: conc, warmup: 0 });
    const serverUs = ((await serverCpu()) - s0) / r.ops;
    const p99 = percentile(r.latenciesMs, 99);
    grpc[conc] = { perSecond: r.perSecond, p99 };
    rows.push([
      conc,
      fmt(r.perSecond),
      fmt(percentile(r.latenciesMs, 50), 2),
      fmt(p99, 2),
      fmt(serverUs),
      fmt(r.cpuUsPerOp),
      pct(r.perSecond, limit.issue),
      pct(r.perSecond, limit.withToken),
      fmt((cores * 1e6) / serverUs),
    ]);
  }
  console.log("\nCreateCertificate over gRPC + TLS (server process + load generator process, same machine)");
  console.log(table(rows));
  console.log(
    "* the server's own CPU per certificate, as if it had every core (cluster workers, load generated elsewhere)",
  );

  const best = Math.max(...Object.values(grpc).map((g) => g.perSecond));
  const mark = (ok: boolean) => (ok ? "met" : "NOT met");
  console.log("\ntargets (issue 2, 2 cores, RSA-2048 CSRs, P-256 CA)");
  console.log(
    table([
      ["target", "measured", ""],
      [
        `>= ${fmt(TARGET_GRPC_PER_SECOND)} certs/s over gRPC`,
        fmt(best),
        mark(best >= TARGET_GRPC_PER_SECOND),
      ],
      [
        `p99 < ${TARGET_P99_MS_AT_64} ms at 64 callers`,
        `${fmt(grpc[64]!.p99, 1)} ms`,
        mark(grpc[64]!.p99 < TARGET_P99_MS_AT_64),
      ],
      [
        `in-process >= ${TARGET_INPROC_SHARE * 100}% of the raw limit (per core)`,
        `${pct(hand.perSecond, perCore)} hand-written issue; ${pct(policyPath.perSecond, perCoreTok)} full policy path vs raw incl. token`,
        mark(hand.perSecond >= TARGET_INPROC_SHARE * perCore),
      ],
    ]),
  );
  console.log(`\n(${fmt((performance.now() - started) / 1000, 0)} s)`);
  for (const c of clients) c.close();
  child.kill("SIGTERM");
  await authority.close();
  rmSync(dir, { recursive: true, force: true });
}

await main();
