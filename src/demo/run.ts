// `meshvault demo`: seed 000's sleep -> httpbin proof on one machine, loopback
// only, with real TLS and gRPC over real sockets, all in this process:
//
//   CA server (Istio CA gRPC API) <- three agents, each with its own token
//   httpbin app <- httpbin tunnel server (mTLS, allow sleep)   [certs over SDS]
//   sleep tunnel client -> httpbin tunnel server                [certs from files]
//   not-sleep tunnel client -> httpbin tunnel server            [certs from files]
//
// and checks the seed's outcomes plus the allow-list one.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAgentConfig, startAgent, type RunningAgent } from "../agent/index.js";
import type { IssuedInfo } from "../agent/workload.js";
import { loadServerConfig } from "../config/load.js";
import { mintLocalToken } from "../identity/local-issuer.js";
import { CloserStack } from "../lifecycle/closer-stack.js";
import { silentLogger, type Logger } from "../log/logger.js";
import type { KeyAlgorithm } from "../pki/keys.js";
import { startCaServer, type CaServerHandle } from "../server/run.js";
import {
  fileCredentialSource,
  sdsCredentialSource,
  startTunnelClient,
  startTunnelServer,
  type CredentialSource,
  type RunningTunnel,
} from "../tunnel/index.js";
import { localAuthority, type DemoAuthorityProvider, type PreparedAuthority } from "./authority-hook.js";
import { startHttpbin, type HttpbinApp } from "./httpbin.js";

export interface DemoOptions {
  /** Where lines go; default stdout. */
  print?: (line: string) => void;
  /** Signing authority; default the embedded local one. */
  authority?: DemoAuthorityProvider;
  trustDomain?: string;
  /** Workload key type; default rsa-2048 like istio-agent. */
  keyAlgorithm?: KeyAlgorithm;
  /** Logger for the components (default silent: the demo prints its own story). */
  logger?: Logger;
  /** Keep the temp directory (tokens, certificates, sockets) for inspection. */
  keepDir?: boolean;
}

export interface DemoOutcome {
  name: string;
  expected: string;
  observed: string;
  ok: boolean;
}

export interface DemoIdentity {
  workload: string;
  spiffeId: string;
  chain: IssuedInfo["path"];
  notAfter: string;
}

export interface DemoResult {
  ok: boolean;
  outcomes: DemoOutcome[];
  identities: DemoIdentity[];
  authority: string;
}

type HttpResult = { status: number; body: string } | { error: string };

function httpGet(port: number, path: string, timeoutMs = 5000): Promise<HttpResult> {
  return new Promise((resolve) => {
    const req = request(
      { host: "127.0.0.1", port, path, method: "GET", agent: false, timeout: timeoutMs },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        res.on("error", (e) => resolve({ error: e.message }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no response within ${timeoutMs} ms`)));
    req.on("error", (e) =>
      resolve({ error: `${(e as NodeJS.ErrnoException).code ?? "error"}: ${e.message}` }),
    );
    req.end();
  });
}

const describe = (r: HttpResult): string =>
  "status" in r ? `HTTP ${r.status}` : `connection failed (${r.error})`;

export async function runDemo(o: DemoOptions = {}): Promise<DemoResult> {
  const print = o.print ?? ((l: string) => process.stdout.write(`${l}\n`));
  const td = o.trustDomain ?? "cluster.local";
  const log = o.logger ?? silentLogger();
  const provider = o.authority ?? localAuthority;
  const work = mkdtempSync(join(tmpdir(), "meshvault-demo-"));
  // An interrupted demo (Ctrl-C) must not leave tokens and keys behind in /tmp.
  const removeWork = (): void => {
    if (!o.keepDir) rmSync(work, { recursive: true, force: true });
  };
  process.once("exit", removeWork);
  // Every server, agent, tunnel and credential source started, stopped last-first at the end
  // (also when a step fails); a part that fails to stop does not keep the others running.
  const cleanups = new CloserStack();
  const id = (sa: string): string => `spiffe://${td}/ns/default/sa/${sa}`;

  try {
    print(`meshvault demo: seed 000's sleep -> httpbin over mutual TLS, on loopback (work dir ${work})`);
    // 1. The CA.
    const prepared: PreparedAuthority = await provider.prepare({ workDir: work, trustDomain: td, print });
    cleanups.defer(() => prepared.cleanup());
    const dataDir = join(work, "ca");
    const config = loadServerConfig({
      env: {},
      overrides: {
        trustDomain: td,
        dataDir,
        "listen.grpc": "127.0.0.1:0",
        "listen.http": "127.0.0.1:0",
        authority: prepared.authority,
        ...(prepared.serverOverrides ?? {}),
      },
    });
    const ca: CaServerHandle = await startCaServer(config, { log, defaultMetrics: false });
    cleanups.defer(() => ca.close());
    await ca.firstAttempt;
    const readiness = ca.readiness();
    if (!readiness.ready) throw new Error(`the CA server is not ready: ${readiness.reason}`);
    print(`CA: ${prepared.description}; Istio CA gRPC API on 127.0.0.1:${ca.grpcPort} (TLS)`);

    // 2. One sidecar-shaped agent per workload, each with its own service-account token.
    const workloads = ["sleep", "httpbin", "not-sleep"] as const;
    const agents = new Map<string, RunningAgent>();
    for (const sa of workloads) {
      const home = join(work, sa);
      const tokenFile = join(home, "var/run/secrets/tokens/istio-token");
      mkdirSync(join(home, "var/run/secrets/tokens"), { recursive: true, mode: 0o700 });
      writeFileSync(
        tokenFile,
        await mintLocalToken({ dataDir, trustDomain: td, namespace: "default", serviceAccount: sa }),
        { mode: 0o600 },
      );
      const agent = await startAgent(
        parseAgentConfig(
          {
            trustDomain: td,
            ca: { address: `localhost:${ca.grpcPort}`, rootCertFile: ca.rootCertFile },
            keyAlgorithm: o.keyAlgorithm ?? "rsa-2048",
            identities: [
              {
                namespace: "default",
                serviceAccount: sa,
                tokenFile,
                // httpbin's tunnel reads SDS like Envoy would; the clients read files.
                ...(sa === "httpbin"
                  ? { sdsSocket: join(home, "var/run/secrets/workload-spiffe-uds/socket") }
                  : { outDir: join(home, "var/run/secrets/workload-spiffe-credentials") }),
              },
            ],
          },
          `demo ${sa}`,
        ),
        { logger: log },
      );
      cleanups.defer(() => agent.close());
      agents.set(sa, agent);
    }
    await Promise.race([
      Promise.all([...agents.values()].map((a) => a.ready())),
      new Promise((_, reject) =>
        setTimeout(
          () => reject(new Error("agents got no certificates within 30 s; see the CA's logs")),
          30_000,
        ).unref(),
      ),
    ]);

    const identities: DemoIdentity[] = [];
    print("");
    print("identities issued (each agent generated its key in memory and sent a CSR with its token):");
    for (const sa of workloads) {
      const info = [...agents.get(sa)!.identities.values()][0]!.identity.issued()!;
      identities.push({
        workload: sa,
        spiffeId: info.spiffeId,
        chain: info.path,
        notAfter: info.notAfter.toISOString(),
      });
      print(`  ${sa.padEnd(9)} ${info.spiffeId}  (expires ${info.notAfter.toISOString()})`);
      info.path.forEach((c, i) => {
        const role = i === 0 ? "leaf" : i === info.path.length - 1 ? "root" : "intermediate";
        const subject =
          i === 0 && c.subject === "(empty)" ? "(empty subject; identity in the URI SAN)" : c.subject;
        print(`    ${role.padEnd(12)} ${subject.padEnd(58)} serial ${c.serial}`);
      });
    }

    // 3. httpbin and the tunnels.
    const app: HttpbinApp = await startHttpbin();
    cleanups.defer(() => app.close());
    const sources: CredentialSource[] = [];
    const httpbinCreds = sdsCredentialSource(
      agents.get("httpbin")!.identities.get("default/httpbin")!.sds!.address,
      "httpbin-tunnel",
    );
    sources.push(httpbinCreds);
    cleanups.defer(() => httpbinCreds.close());
    const tunnels: RunningTunnel[] = [];
    const server = await startTunnelServer({
      listen: "127.0.0.1:0",
      target: `127.0.0.1:${app.port}`,
      allow: [id("sleep")],
      credentials: httpbinCreds,
      logger: log.child({ component: "tunnel", tunnel: "server" }),
    });
    tunnels.push(server);
    cleanups.defer(() => server.close());
    const clientFor = async (sa: string): Promise<RunningTunnel> => {
      const creds = fileCredentialSource(join(work, sa, "var/run/secrets/workload-spiffe-credentials"), 500);
      cleanups.defer(() => creds.close());
      const t = await startTunnelClient({
        listen: "127.0.0.1:0",
        connect: `127.0.0.1:${server.port}`,
        verifySpiffeId: [id("httpbin")],
        credentials: creds,
        logger: log.child({ component: "tunnel", tunnel: sa }),
      });
      cleanups.defer(() => t.close());
      return t;
    };
    const sleepTunnel = await clientFor("sleep");
    const notSleepTunnel = await clientFor("not-sleep");
    print("");
    print(
      `httpbin app 127.0.0.1:${app.port} <- httpbin mTLS tunnel 127.0.0.1:${server.port} (allow ${id("sleep")})`,
    );
    print(`sleep     -> 127.0.0.1:${sleepTunnel.port} (plaintext) -> mTLS as ${id("sleep")}`);
    print(`not-sleep -> 127.0.0.1:${notSleepTunnel.port} (plaintext) -> mTLS as ${id("not-sleep")}`);

    // 4. The outcomes.
    const outcomes: DemoOutcome[] = [];
    const r1 = await httpGet(sleepTunnel.port, "/headers");
    outcomes.push({
      name: "sleep -> httpbin over mTLS: GET /headers",
      expected: "HTTP 200",
      observed: describe(r1),
      ok: "status" in r1 && r1.status === 200,
    });
    const r2 = await httpGet(server.port, "/headers");
    outcomes.push({
      name: "plaintext -> httpbin's mTLS port: GET /headers",
      expected: "connection fails",
      observed: describe(r2),
      ok: "error" in r2,
    });
    const deniedBefore = server.stats().denied;
    const r3 = await httpGet(notSleepTunnel.port, "/headers");
    const denied = server.stats().denied > deniedBefore;
    outcomes.push({
      name: `not-sleep (${id("not-sleep")}) -> httpbin: GET /headers`,
      expected: "refused (not on httpbin's allow-list)",
      observed: `${describe(r3)}${denied ? "; httpbin's tunnel logged the SPIFFE ID as denied" : ""}`,
      ok: "error" in r3 && denied,
    });
    print("");
    outcomes.forEach((x, i) => {
      print(`${i + 1}. ${x.name}`);
      print(`   expected ${x.expected}; observed ${x.observed}  [${x.ok ? "ok" : "FAILED"}]`);
    });
    const ok = outcomes.every((x) => x.ok);
    print("");
    print(ok ? "all three outcomes hold." : "DEMO FAILED: at least one outcome did not hold.");
    return { ok, outcomes, identities, authority: prepared.description };
  } finally {
    await cleanups.close();
    removeWork();
    process.removeListener("exit", removeWork);
    print(o.keepDir ? `kept ${work}` : "cleaned up: every server, agent, tunnel and temp file is gone.");
  }
}
