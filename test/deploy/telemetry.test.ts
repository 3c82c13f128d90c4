// deploy/grafana and deploy/prometheus query only metrics that exist: a real server and a real
// agent are started, and every metric name in the dashboard's and the alerts' PromQL must be a
// metric family on their /metrics. istiod's CA metrics are there under istiod's own names.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { startCaServer, type CaServerHandle } from "../../src/server/run.js";
import { loadServerConfig } from "../../src/config/load.js";
import { silentLogger } from "../../src/log/logger.js";
import { parseAgentConfig, startAgent, type RunningAgent } from "../../src/agent/index.js";
import { REPO } from "../helpers/cli.js";
import { writeSleepToken } from "../helpers/local-token.js";

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: { expr: string; refId: string }[];
}
interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels: { severity: string };
  annotations: { summary: string };
}

const dashboard = JSON.parse(
  readFileSync(join(REPO, "deploy/grafana/meshvault-dashboard.json"), "utf8"),
) as { title: string; uid: string; panels: Panel[]; templating: { list: { name: string }[] } };
const rules = parseYaml(readFileSync(join(REPO, "deploy/prometheus/meshvault-rules.yaml"), "utf8")) as {
  apiVersion: string;
  kind: string;
  spec: { groups: { name: string; rules: Rule[] }[] };
};

const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"]);

/** The metric names a PromQL expression selects. */
function metricNames(expr: string): string[] {
  let e = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  e = e.replace(/\{[^}]*\}/g, " ").replace(/\[[^\]]*\]/g, " ");
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const names = [...e.matchAll(/(?<![\w.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()/g)].map((m) => m[1]!);
  return names.filter((n) => !KEYWORDS.has(n));
}

function balanced(expr: string): boolean {
  const pairs: Record<string, string> = { ")": "(", "}": "{", "]": "[" };
  const stack: string[] = [];
  for (const ch of expr.replace(/"(?:[^"\\]|\\.)*"/g, '""')) {
    if ("({[".includes(ch)) stack.push(ch);
    else if (ch in pairs && stack.pop() !== pairs[ch]) return false;
  }
  return stack.length === 0;
}

const dir = mkdtempSync(join(tmpdir(), "meshvault-telemetry-"));
let server: CaServerHandle;
let agent: RunningAgent;
let families: Map<string, string>;

before(async () => {
  server = await startCaServer(
    loadServerConfig({
      env: {},
      overrides: { dataDir: join(dir, "ca"), "listen.grpc": "127.0.0.1:0", "listen.http": "127.0.0.1:0" },
    }),
    { log: silentLogger() },
  );
  await server.firstAttempt;
  const tokenFile = await writeSleepToken(dir, join(dir, "ca"));
  agent = await startAgent(
    parseAgentConfig(
      {
        ca: { address: `127.0.0.1:${server.grpcPort}`, rootCertFile: server.rootCertFile, serverName: "localhost" },
        keyAlgorithm: "ec-p256",
        statusListen: "127.0.0.1:0",
        identities: [{ namespace: "default", serviceAccount: "sleep", tokenFile, outDir: join(dir, "out") }],
      },
      "test",
    ),
    { processMetrics: true },
  );
  await agent.ready();
  families = new Map();
  for (const url of [
    `http://127.0.0.1:${server.httpPort}/metrics`,
    `http://127.0.0.1:${agent.statusPort}/metrics`,
  ]) {
    const text = await (await fetch(url)).text();
    for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      families.set(m[1]!, m[2]!);
      if (m[2] === "histogram")
        for (const s of ["_bucket", "_sum", "_count"]) families.set(`${m[1]}${s}`, "histogram part");
    }
  }
});
after(async () => {
  await agent?.close();
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("the Grafana dashboard is well-formed: unique ids, a Prometheus datasource variable, panels on the grid", () => {
  assert.equal(dashboard.uid, "meshvault-ca");
  assert.ok(dashboard.templating.list.some((v) => v.name === "datasource"));
  const ids = dashboard.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
  for (const p of dashboard.panels) {
    assert.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the 24-column grid`);
    if (p.type === "row") continue;
    assert.ok(p.targets?.length, `${p.title} has queries`);
    for (const t of p.targets!) assert.ok(balanced(t.expr), `${p.title}: unbalanced ${t.expr}`);
  }
  const titles = dashboard.panels.map((p) => p.title).join(" | ");
  for (const want of [/ready/i, /issuance rate/i, /errors by code/i, /latency/i, /root/i, /intermediate/i, /agent/i, /vault/i])
    assert.match(titles, want);
});

test("the PrometheusRule is well-formed: every alert has an expression, a severity and a summary", () => {
  assert.equal(rules.apiVersion, "monitoring.coreos.com/v1");
  assert.equal(rules.kind, "PrometheusRule");
  const alerts = rules.spec.groups.flatMap((g) => g.rules);
  for (const r of alerts) {
    assert.match(r.alert, /^Meshvault[A-Za-z]+$/);
    assert.ok(balanced(r.expr), `${r.alert}: unbalanced ${r.expr}`);
    assert.ok(["warning", "critical"].includes(r.labels.severity), r.alert);
    assert.ok(r.annotations.summary, r.alert);
  }
  const names = alerts.map((r) => r.alert);
  for (const want of ["MeshvaultNotReady", "MeshvaultRootExpiringSoon", "MeshvaultIntermediateExpiring", "MeshvaultVaultErrors", "MeshvaultIssuanceFailures"])
    assert.ok(names.includes(want), want);
});

test("every metric the dashboard and the alerts query is on a running server's or agent's /metrics", () => {
  const exprs = [
    ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
    ...rules.spec.groups.flatMap((g) => g.rules.map((r) => r.expr)),
  ];
  const used = new Set(exprs.flatMap(metricNames));
  assert.ok(used.size >= 12, [...used].join(" "));
  const missing = [...used].filter((n) => !families.has(n));
  assert.deepEqual(missing, [], `not exported: ${missing.join(", ")}`);
});

test("istiod's CA metrics under istiod's names, types and labels; process metrics under standard names", async () => {
  for (const [name, type] of [
    ["citadel_server_csr_count", "counter"],
    ["citadel_server_authentication_failure_count", "counter"],
    ["citadel_server_csr_parsing_err_count", "counter"],
    ["citadel_server_id_extraction_err_count", "counter"],
    ["citadel_server_csr_sign_err_count", "counter"],
    ["citadel_server_success_cert_issuance_count", "counter"],
    ["citadel_server_root_cert_expiry_timestamp", "gauge"],
    ["citadel_server_root_cert_expiry_seconds", "gauge"],
    ["citadel_server_cert_chain_expiry_timestamp", "gauge"],
    ["citadel_server_cert_chain_expiry_seconds", "gauge"],
    ["process_cpu_seconds_total", "counter"],
    ["process_resident_memory_bytes", "gauge"],
    ["process_start_time_seconds", "gauge"],
  ] as [string, string][])
    assert.equal(families.get(name), type, name);
  const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
  // The agent's one issuance, counted as istiod counts it.
  assert.match(text, /^citadel_server_csr_count 1$/m);
  assert.match(text, /^citadel_server_success_cert_issuance_count 1$/m);
  assert.match(text, /^citadel_server_csr_sign_err_count\{error="CA_NOT_READY"\} 0$/m);
  const rootTs = Number(/^citadel_server_root_cert_expiry_timestamp (\S+)$/m.exec(text)?.[1]);
  const chainLeft = Number(/^citadel_server_cert_chain_expiry_seconds (\S+)$/m.exec(text)?.[1]);
  assert.ok(rootTs > Date.now() / 1000 + 9 * 365 * 86400, `root expiry ${rootTs}`);
  assert.ok(chainLeft > 300 * 86400 && chainLeft < 366 * 86400, `intermediate time left ${chainLeft}`);
  assert.doesNotMatch(text, /meshvault_process_/);
});
