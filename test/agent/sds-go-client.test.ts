// An SDS client that is not ours (go-control-plane + grpc-go, test/sds-peers/client) against
// `meshvault agent --sds-socket` processes at every log level: separate and shared streams,
// ACK, NACK, unknown names, a wrong type_url, reconnect with the last version, clients that
// leave mid-push, FetchSecrets, DeltaSecrets and a rotation pushed on the open stream. After
// every scenario the Go client opens a fresh connection and the agent must serve it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startCaFixture, type CaFixture } from "./ca-fixture.js";
import {
  LEVEL_NUMBER,
  LOG_LEVELS,
  startAgentProcess,
  type AgentProcess,
  type LogLevel,
} from "./sds-agent.js";
import {
  GO_SCENARIOS,
  byName,
  runGoScenario,
  sdsClientBinary,
  type GoReport,
  type GoResponse,
  type GoScenario,
} from "./sds-go-client.js";
import { waitFor } from "../helpers/wait.js";

const SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
// Rotates every ~5 s (grace ratio 0.5): the rotation scenario waits for a real renewal.
const CERT_TTL = "10s";

let ca: CaFixture;
let dir: string;
before(async () => {
  // Build (or find) the Go client first: a missing toolchain fails here with the reason.
  await sdsClientBinary();
  ca = await startCaFixture();
  dir = mkdtempSync(join(tmpdir(), "mv-sds-go-"));
});
after(async () => {
  await ca?.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function assertServes(r: GoResponse | undefined, names: string[], what: string, spiffeId: string): void {
  assert.ok(r, `${what}: a response`);
  assert.equal(r.typeUrl, SECRET_TYPE_URL, `${what}: type_url`);
  assert.ok(r.version && r.nonce, `${what}: version and nonce`);
  const got = byName(r);
  assert.deepEqual([...got.keys()].sort(), [...names].sort(), `${what}: resource names`);
  for (const res of got.values()) {
    assert.equal(res.anyType, SECRET_TYPE_URL, `${what}: ${res.name}'s Any type`);
    assert.equal(res.valid, "", `${what}: ${res.name} passes Envoy's proto validation`);
  }
  const def = got.get("default");
  if (def) {
    assert.equal(def.kind, "tls_certificate");
    assert.equal(def.keyMatches, true, `${what}: the private key matches the leaf`);
    assert.ok((def.chainLen ?? 0) >= 2, `${what}: leaf and intermediate`);
    assert.deepEqual(def.leafURIs, [spiffeId], `${what}: the socket's identity`);
  }
  const root = got.get("ROOTCA");
  if (root) {
    assert.equal(root.kind, "validation_context");
    assert.ok((root.roots ?? 0) >= 1);
  }
  if (def && root) assert.equal(r.verified, true, `${what}: default verifies against ROOTCA`);
}

function serial(r: GoResponse | undefined): string | undefined {
  return byName(r).get("default")?.leafSerial;
}

/** What the scenario must show, given the Go client's report. */
async function check(
  scenario: GoScenario,
  rep: GoReport,
  agent: AgentProcess,
  level: LogLevel,
  detail: string,
  id: string,
): Promise<void> {
  const r = rep.responses ?? {};
  const warnLogged = LEVEL_NUMBER[level] <= LEVEL_NUMBER.warn;
  switch (scenario) {
    case "separate":
      assertServes(r.default, ["default"], "default stream", id);
      assertServes(r.ROOTCA, ["ROOTCA"], "ROOTCA stream", id);
      assert.equal(rep.verified, true, "default (one stream) verifies against ROOTCA (another)");
      assert.notEqual(r.default!.nonce, r.ROOTCA!.nonce);
      break;
    case "one-stream":
      assertServes(r.first, ["default", "ROOTCA"], "one stream", id);
      break;
    case "ack":
    case "nack": {
      assertServes(r.first, ["default"], "first response", id);
      assertServes(r.anchor, ["default", "ROOTCA"], "response to the added subscription", id);
      // Anything between the ACK/NACK and the anchor may only be a rotation push (new content):
      // the server answered neither the ACK nor the NACK, and did not resend what was rejected.
      for (const b of rep.between ?? [])
        assert.notEqual(serial(b), serial(r.first), `${scenario} was answered with the same certificate`);
      // A rotation push that crossed the NACK makes it stale (ignored, not logged); without one,
      // the NACK was for the latest response and must be logged.
      if (scenario === "nack" && warnLogged && (rep.between ?? []).length === 0) {
        const rec = await agent.waitForLog("the NACK warning", (l) => l.detail === detail);
        assert.equal(rec.level, LEVEL_NUMBER.warn);
        assert.equal(rec.component, "sds");
        assert.equal(rec.nonce, r.first!.nonce);
      }
      break;
    }
    case "unknown":
      assertServes(r.mixed, ["default"], "default + unknown name", id);
      assertServes(r.anchor, ["ROOTCA"], "unknown name, then ROOTCA added", id);
      assert.deepEqual(rep.between ?? [], [], "nothing is sent for an unknown name alone");
      assert.deepEqual(r.fetch?.resources, [], "FetchSecrets of an unknown name returns no resource");
      if (warnLogged) {
        const rec = await agent.waitForLog("the unknown-resource warning", (l) => l.resource === detail);
        assert.equal(rec.level, LEVEL_NUMBER.warn);
      }
      break;
    case "bad-type":
      assert.equal(rep.statuses?.stream?.code, "InvalidArgument");
      assert.match(rep.statuses.stream.message, /envoy\.extensions\.transport_sockets\.tls\.v3\.Secret/);
      assert.equal(rep.statuses?.fetch?.code, "InvalidArgument");
      break;
    case "reconnect":
      assertServes(r.first, ["default", "ROOTCA"], "before reconnecting", id);
      assertServes(
        r.reconnected,
        ["default", "ROOTCA"],
        "first request on the new stream with the last version",
        id,
      );
      break;
    case "leave":
      assert.equal(rep.facts?.left, 10);
      break;
    case "fetch":
      assertServes(r.both, ["default", "ROOTCA"], "FetchSecrets default + ROOTCA", id);
      assertServes(r.rootca, ["ROOTCA"], "FetchSecrets ROOTCA", id);
      break;
    case "delta":
      assert.equal(rep.statuses?.delta?.code, "Unimplemented");
      break;
    case "rotation":
      assertServes(r.first, ["default", "ROOTCA"], "before rotation", id);
      assertServes(r.pushed, ["default", "ROOTCA"], "pushed after rotation", id);
      assert.notEqual(serial(r.pushed), serial(r.first), "the push carries the renewed certificate");
      assert.notEqual(r.pushed!.version, r.first!.version);
      assert.notEqual(r.pushed!.nonce, r.first!.nonce);
      break;
    case "fresh":
      break;
  }
}

async function runAll(agent: AgentProcess, level: LogLevel, label: string): Promise<void> {
  for (const [name, socket] of agent.sockets) {
    const [ns, sa] = name.split("/");
    const id = `spiffe://cluster.local/ns/${ns}/sa/${sa}`;
    // Started: a fresh stream is served.
    await waitFor(
      `${label} ${name} to serve SDS`,
      async () => {
        const f = await runGoScenario(socket, "fresh");
        return f.freshError === undefined && f.fresh !== undefined;
      },
      60_000, // six agents start at once on a shared two-core machine
    );
    for (const scenario of GO_SCENARIOS) {
      const detail =
        scenario === "unknown" ? `no-such-secret-${label}` : `${label} ${name}: certificate rejected (test)`;
      const rep = await runGoScenario(socket, scenario, { detail, wait: "30s" });
      const what = `${label} ${name} ${scenario}`;
      assert.equal(rep.error, undefined, `${what}: ${rep.error}`);
      await check(scenario, rep, agent, level, detail, id);
      assert.equal(rep.freshError, undefined, `${what}: fresh stream: ${rep.freshError}`);
      assertServes(rep.fresh, ["default", "ROOTCA"], `${what}: fresh stream afterwards`, id);
      assert.equal(agent.exitCode(), undefined, `${what}: the agent is still running`);
    }
  }
  assert.deepEqual(agent.otherOutput, [], "only JSON log lines (no stack trace)");
  assert.deepEqual(
    agent.logs.filter((l) => l.level < LEVEL_NUMBER[level]),
    [],
    `nothing below ${level} is logged`,
  );
  assert.deepEqual(
    agent.logs.filter((l) => l.component === "sds" && l.level >= LEVEL_NUMBER.error),
    [],
    "the SDS server logged no error",
  );
}

test(
  "go-control-plane's SDS client against `meshvault agent` at every log level",
  { concurrency: true },
  async (t) => {
    const shapes: { level: LogLevel; shape: "sidecar" | "node-agent" }[] = [
      ...LOG_LEVELS.map((level) => ({ level, shape: "sidecar" as const })),
      { level: "debug", shape: "node-agent" },
    ];
    await Promise.all(
      shapes.map(({ level, shape }) =>
        t.test(`${shape}, --log-level ${level}`, async () => {
          const label = `${shape}-${level}`;
          const agent = await startAgentProcess({
            ca,
            dir: join(dir, label),
            level,
            shape,
            serviceAccounts: shape === "sidecar" ? ["sleep"] : ["sleep", "httpbin"],
            args: ["--cert-ttl", CERT_TTL],
          });
          try {
            await runAll(agent, level, label);
          } finally {
            assert.equal(await agent.stop(), 0, `clean exit:\n${agent.otherOutput.join("\n")}`);
          }
        }),
      ),
    );
  },
);
