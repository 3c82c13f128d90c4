// Workload pairs under continuous mTLS load, for the root-rotation proof (test and bench):
// per pair, an agent (SDS) + tunnel server in front of an echo service, and an agent (files)
// + tunnel client; every request is a new TCP connection, so a new mutual TLS handshake
// through both tunnels. Attempts and failures are counted per phase label. A failed request
// says why: what each side's tunnel logged (the TLS refusal and its cause) and the
// certificates each side held at that moment; every agent and tunnel line is in
// <dir>/journal.jsonl (kept with MESHVAULT_KEEP_TEST_DIRS).
import net from "node:net";
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { parseAgentConfig } from "../../src/agent/config.js";
import { startAgent, type RunningAgent } from "../../src/agent/agent.js";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { parseCertificates, type Certificate } from "../../src/pki/certificate.js";
import { formatName } from "../../src/pki/name.js";
import {
  fileCredentialSource,
  sdsCredentialSource,
  startTunnelClient,
  startTunnelServer,
  type CredentialSource,
  type RunningTunnel,
  type TlsCredentials,
} from "../../src/tunnel/index.js";

export interface PairsOptions {
  pairs: number;
  dir: string;
  /** The CA servers (`host:port` gRPC) and the data dir whose local issuer they trust; pairs spread over them. */
  cas: { grpc: string; dataDir: string; rootCertFile: string }[];
  certTtl: string;
  rootsPollMs: number;
  /** Agents renew when this fraction of the lifetime is left (istio-agent's default 0.5). */
  graceRatio?: number;
}

export interface PhaseCount {
  attempted: number;
  failed: number;
  reasons: Map<string, number>;
}

export interface Pairs {
  agents: RunningAgent[];
  /** SDS sockets and out dirs, in `meshvault verify` source syntax, for `root rotate --check`. */
  checks: string[];
  phase: string;
  counts: Map<string, PhaseCount>;
  /** Starts the request loops (one request in flight per pair). */
  run(): void;
  /** Waits until every pair completed at least `n` more requests in the current phase. */
  progress(n: number, ms?: number): Promise<void>;
  report(): string;
  totals(): { attempted: number; failed: number };
  /** The agents' certificates: issued and failed CSRs so far, and the least time any has left. */
  certs(): { issued: number; failures: number; minSecondsLeft: number };
  /** Each failed request: when, which pair, what each tunnel logged and the certificates both sides held. */
  failures(): string;
  stop(): Promise<void>;
}

interface JournalLine {
  time: number;
  level: string;
  msg: string;
  pair?: number;
  [k: string]: unknown;
}

interface Failure {
  pair: number;
  phase: string;
  err: string;
  start: number;
  end: number;
  client: string;
  server: string;
}

/** One line per certificate: leaf and chain, then the trust bundle's roots. */
function describeCredentials(c: TlsCredentials | undefined, at: number): string {
  if (!c) return "      (none)";
  const line = (x: Certificate): string =>
    `${x.sans.uris[0] ?? formatName(x.subject)} serial ${x.serialHex.slice(0, 12)} issuer ${formatName(x.issuer)} ` +
    `${x.notBefore.toISOString()}..${x.notAfter.toISOString()} (${((x.notAfter.getTime() - at) / 1000).toFixed(1)}s left)`;
  try {
    const chain = parseCertificates(c.certChainPem).map(
      (x, i) => `      ${i === 0 ? "leaf" : "ca  "} ${line(x)}`,
    );
    const roots = parseCertificates(c.rootsPem).map((x) => `      root ${line(x)}`);
    return [...chain, ...roots].join("\n");
  } catch (err) {
    return `      (unreadable: ${(err as Error).message})`;
  }
}

function echoServer(): Promise<net.Server> {
  const s = net.createServer((c) => c.pipe(c));
  return new Promise((r) => s.listen(0, "127.0.0.1", () => r(s)));
}

function roundTrip(port: number, msg: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let got = "";
    const done = (err?: string): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(err);
    };
    const timer = setTimeout(() => done(`timeout (got ${JSON.stringify(got)})`), 10_000);
    s.on("connect", () => s.write(msg));
    s.on("data", (b) => {
      got += b.toString();
      if (got === msg) done();
    });
    s.on("error", (e) => done(e.message));
    s.on("close", () => done(got === msg ? undefined : `closed after ${JSON.stringify(got)}`));
  });
}

export async function startPairs(o: PairsOptions): Promise<Pairs> {
  const echo = await echoServer();
  const echoPort = (echo.address() as net.AddressInfo).port;
  const agents: RunningAgent[] = [];
  const tunnels: RunningTunnel[] = [];
  const sources: CredentialSource[] = [];
  const checks: string[] = [];
  const ports: number[] = [];
  const creds: { server: CredentialSource; client: CredentialSource }[] = [];
  mkdirSync(o.dir, { recursive: true });
  // Every agent and tunnel line goes to the journal file; all but accepted connections are kept
  // here too, for the failure report.
  const journalFile = join(o.dir, "journal.jsonl");
  const journal: JournalLine[] = [];
  const logger = pino(
    { level: "debug", timestamp: pino.stdTimeFunctions.epochTime },
    {
      write(line: string) {
        appendFileSync(journalFile, line);
        const rec = JSON.parse(line) as Record<string, unknown>;
        if (rec["msg"] === "connection accepted") return;
        journal.push({
          ...rec,
          time: rec["time"] as number,
          level: pino.levels.labels[rec["level"] as number] ?? String(rec["level"]),
          msg: String(rec["msg"]),
        });
      },
    },
  );
  const failed: Failure[] = [];
  const token = async (ca: PairsOptions["cas"][number], sa: string): Promise<string> => {
    const file = join(o.dir, `${sa}.token`);
    writeFileSync(
      file,
      await mintLocalToken({
        dataDir: ca.dataDir,
        trustDomain: "cluster.local",
        namespace: "default",
        serviceAccount: sa,
        audiences: ["istio-ca"],
        ttlSeconds: 3600,
      }),
      { mode: 0o600 },
    );
    return file;
  };
  for (let i = 0; i < o.pairs; i++) {
    const ca = o.cas[i % o.cas.length]!;
    const serverSa = `server-${i}`;
    const clientSa = `client-${i}`;
    const sock = join(o.dir, `${serverSa}.sock`);
    const outDir = join(o.dir, clientSa);
    const agent = await startAgent(
      parseAgentConfig(
        {
          trustDomain: "cluster.local",
          ca: { address: ca.grpc, rootCertFile: ca.rootCertFile },
          keyAlgorithm: "ec-p256",
          certTtl: o.certTtl,
          ...(o.graceRatio ? { graceRatio: o.graceRatio } : {}),
          backoff: { initial: "200ms", max: "2s" },
          identities: [
            {
              namespace: "default",
              serviceAccount: serverSa,
              tokenFile: await token(ca, serverSa),
              sdsSocket: sock,
            },
            { namespace: "default", serviceAccount: clientSa, tokenFile: await token(ca, clientSa), outDir },
          ],
        },
        "rotation test",
      ),
      { rootsPollMs: o.rootsPollMs, logger: logger.child({ pair: i }) },
    );
    agents.push(agent);
    await agent.ready();
    checks.push(`${serverSa}=sds:${sock}`, `${clientSa}=file:${outDir}`);
    const serverCreds = sdsCredentialSource(sock);
    const clientCreds = fileCredentialSource(outDir, 200);
    sources.push(serverCreds, clientCreds);
    const ts = await startTunnelServer({
      listen: "127.0.0.1:0",
      target: `127.0.0.1:${echoPort}`,
      allow: [`spiffe://cluster.local/ns/default/sa/${clientSa}`],
      credentials: serverCreds,
      logger: logger.child({ pair: i, component: "tunnel server" }),
    });
    const tc = await startTunnelClient({
      listen: "127.0.0.1:0",
      connect: `127.0.0.1:${ts.port}`,
      verifySpiffeId: [`spiffe://cluster.local/ns/default/sa/${serverSa}`],
      credentials: clientCreds,
      logger: logger.child({ pair: i, component: "tunnel client" }),
    });
    tunnels.push(ts, tc);
    ports.push(tc.port);
    creds.push({ server: serverCreds, client: clientCreds });
  }
  const counts = new Map<string, PhaseCount>();
  const done = new Array<number>(o.pairs).fill(0);
  let running = false;
  const loops: Promise<void>[] = [];
  const pairs: Pairs = {
    agents,
    checks,
    phase: "before",
    counts,
    run() {
      running = true;
      for (let i = 0; i < ports.length; i++)
        loops.push(
          (async () => {
            let n = 0;
            while (running) {
              const label = pairs.phase;
              let c = counts.get(label);
              if (!c) counts.set(label, (c = { attempted: 0, failed: 0, reasons: new Map() }));
              c.attempted++;
              const start = Date.now();
              const err = await roundTrip(ports[i]!, `pair ${i} request ${n++}`);
              if (err) {
                const end = Date.now();
                failed.push({
                  pair: i,
                  phase: label,
                  err,
                  start,
                  end,
                  client: describeCredentials(creds[i]!.client.current(), end),
                  server: describeCredentials(creds[i]!.server.current(), end),
                });
                c.failed++;
                c.reasons.set(err, (c.reasons.get(err) ?? 0) + 1);
                await new Promise((r) => setTimeout(r, 50));
              }
              done[i]!++;
              // A short pause: steady load without starving the agents and servers on a small machine.
              await new Promise((r) => setTimeout(r, 20));
            }
          })(),
        );
    },
    async progress(n, ms = 60_000) {
      const start = [...done];
      const end = Date.now() + ms;
      while (done.some((d, i) => d - start[i]! < n)) {
        if (Date.now() > end) throw new Error(`load made no progress for ${ms} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    report() {
      const lines = ["phase            handshakes+requests attempted   failed"];
      for (const [label, c] of counts) {
        lines.push(`${label.padEnd(16)} ${String(c.attempted).padStart(29)}   ${c.failed}`);
        for (const [r, k] of c.reasons) lines.push(`    ${k} x ${r}`);
      }
      return lines.join("\n");
    },
    failures() {
      const at = (t: number): string => new Date(t).toISOString();
      return failed
        .map((f) => {
          // What this pair's agent and tunnels said from a renewal before until just after.
          const lines = journal
            .filter((l) => l.pair === f.pair && l.time >= f.start - 12_000 && l.time <= f.end + 2000)
            .map((l) => {
              const { time, level, msg, pair: _p, pid: _i, hostname: _h, ...rest } = l;
              return `      ${at(time)} ${level} ${msg} ${JSON.stringify(rest)}`;
            });
          return [
            `pair ${f.pair} (${f.phase}) ${at(f.start)}..${at(f.end)}: ${f.err}`,
            `    client side held:\n${f.client}`,
            `    server side held:\n${f.server}`,
            `    pair ${f.pair}'s agent and tunnels said:`,
            ...lines,
          ].join("\n");
        })
        .join("\n");
    },
    totals() {
      let attempted = 0;
      let failed = 0;
      for (const c of counts.values()) {
        attempted += c.attempted;
        failed += c.failed;
      }
      return { attempted, failed };
    },
    certs() {
      const sum = (vs: { value: number }[]): number => vs.reduce((n, v) => n + v.value, 0);
      const left = agents.flatMap((a) => a.status().identities.map((i) => i.secondsToExpiry ?? 0));
      return {
        issued: sum(agents.flatMap((a) => a.metrics.issued.values())),
        failures: sum(agents.flatMap((a) => a.metrics.failures.values())),
        minSecondsLeft: Math.min(...left),
      };
    },
    async stop() {
      running = false;
      await Promise.all(loops);
      for (const t of tunnels) await t.close();
      for (const s of sources) await s.close();
      for (const a of agents) await a.close();
      await new Promise((r) => echo.close(r));
    },
  };
  return pairs;
}
