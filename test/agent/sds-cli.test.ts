// The SDS server as users run it: `meshvault agent` processes (node-agent shape) at every
// log level, fed what Envoy (or anyone on the socket) may send: a NACK,
// an unknown resource name, a non-Secret type_url, a client that leaves mid-push. The
// process must stay up and keep serving fresh streams, and its logs must say what happened.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { startCaFixture, type CaFixture } from "./ca-fixture.js";
import {
  LEVEL_NUMBER,
  LOG_LEVELS,
  startAgentProcess,
  type AgentProcess,
  type LogLevel,
} from "./sds-agent.js";
import { SdsTestClient, secretsByName } from "../helpers/sds-client.js";
import { waitFor } from "../helpers/wait.js";

const BOTH = ["default", "ROOTCA"];
const CLUSTER_TYPE_URL = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
// Generous: five agents start at once on a shared two-core machine.
const REPLY_MS = 15_000;

let ca: CaFixture;
let dir: string;
before(async () => {
  ca = await startCaFixture();
  dir = mkdtempSync(join(tmpdir(), "mv-sds-cli-"));
});
after(async () => {
  await ca.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** A fresh stream on `socket` gets default + ROOTCA (retried while the agent starts). */
async function freshStreamServes(socket: string, ms = 60_000): Promise<void> {
  await waitFor(
    `a fresh SDS stream on ${socket} to serve default and ROOTCA`,
    async () => {
      const client = new SdsTestClient(`unix://${socket}`);
      try {
        const s = client.streamSecrets();
        s.send({ node: { id: "fresh" }, resourceNames: BOTH });
        const names = [...secretsByName(await s.next(REPLY_MS)).keys()].sort();
        s.cancel();
        return names.join(",") === "ROOTCA,default";
      } catch {
        return false;
      } finally {
        client.close();
      }
    },
    ms,
  );
}

async function exercise(agent: AgentProcess, level: LogLevel, socket: string, tag: string): Promise<void> {
  const client = new SdsTestClient(`unix://${socket}`);
  try {
    // NACK: logged at warn with its detail; the stream stays open and answers a new subscription.
    const s = client.streamSecrets();
    s.send({ node: { id: tag }, resourceNames: ["default"] });
    const first = await s.next(REPLY_MS);
    const detail = `${tag}: certificate rejected by the test`;
    s.nack(first, ["default"], detail);
    s.send({ node: { id: tag }, resourceNames: BOTH, responseNonce: first.nonce });
    const afterNack = await s.next(REPLY_MS);
    assert.deepEqual([...secretsByName(afterNack).keys()].sort(), ["ROOTCA", "default"]);
    if (LEVEL_NUMBER[level] <= LEVEL_NUMBER.warn) {
      const rec = await agent.waitForLog("the NACK warning", (r) => r.detail === detail);
      assert.equal(rec.level, LEVEL_NUMBER.warn);
      assert.equal(rec.component, "sds");
    }

    // Unknown resource name: served without it, warned about, never a crash.
    const u = client.streamSecrets();
    u.send({ node: { id: tag }, resourceNames: ["default", `${tag}-no-such-secret`] });
    assert.deepEqual([...secretsByName(await u.next(REPLY_MS)).keys()], ["default"]);
    if (LEVEL_NUMBER[level] <= LEVEL_NUMBER.warn)
      await agent.waitForLog("the unknown-resource warning", (r) => r.resource === `${tag}-no-such-secret`);

    // Wrong type_url: that stream ends with INVALID_ARGUMENT.
    const b = client.streamSecrets();
    b.send({ node: { id: tag }, resourceNames: ["default"], typeUrl: CLUSTER_TYPE_URL });
    const st = await b.status;
    assert.equal(st.code, grpc.status.INVALID_ARGUMENT);
    assert.match(st.details, /Secret/);

    // A client that leaves before its push is written.
    for (let i = 0; i < 5; i++) {
      const c = client.streamSecrets();
      c.send({ node: { id: tag }, resourceNames: BOTH });
      c.cancel();
    }
    s.cancel();
    u.cancel();
  } finally {
    client.close();
  }
  await freshStreamServes(socket);
  assert.equal(agent.exitCode(), undefined, "the agent is still running");
}

function checkLogs(agent: AgentProcess, level: LogLevel): void {
  assert.deepEqual(agent.otherOutput, [], "only JSON log lines (no stack trace)");
  const below = agent.logs.filter((r) => r.level < LEVEL_NUMBER[level]);
  assert.deepEqual(below, [], `nothing below ${level} is logged`);
  const errors = agent.logs.filter((r) => r.component === "sds" && r.level >= LEVEL_NUMBER.error);
  assert.deepEqual(errors, [], "the SDS server logged no error");
  if (LEVEL_NUMBER[level] <= LEVEL_NUMBER.debug)
    assert.ok(
      agent.logs.some((r) => r.component === "sds" && r.level === LEVEL_NUMBER.debug),
      "SDS debug lines are written at debug and trace",
    );
}

// The sidecar shape at every level is driven by the Go client (sds-go-client.test.ts); here the
// node-agent shape (several identities, one socket each) at every level.
const shape = "node-agent";
test(`${shape}: the agent survives NACK, unknown names, bad type_url and leaving clients at every log level`, async () => {
  const serviceAccounts = ["sleep", "httpbin"];
  await Promise.all(
    LOG_LEVELS.map(async (level) => {
      const agent = await startAgentProcess({
        ca,
        dir: join(dir, `${shape}-${level}`),
        level,
        shape,
        serviceAccounts,
      });
      try {
        for (const socket of agent.sockets.values()) await freshStreamServes(socket);
        for (const [name, socket] of agent.sockets)
          await exercise(agent, level, socket, `${shape}-${level}-${name.replace("/", "-")}`);
        checkLogs(agent, level);
      } finally {
        const code = await agent.stop();
        assert.equal(code, 0, `clean exit at ${level}:\n${agent.otherOutput.join("\n")}`);
      }
    }),
  );
});
