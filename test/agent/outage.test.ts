import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseAgentConfig, startAgent } from "../../src/agent/index.js";
import { startCaFixture } from "./ca-fixture.js";

async function waitFor(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test("CA outage: the agent keeps serving its still-valid certificate, says renewal is overdue, recovers", async () => {
  const ca = await startCaFixture();
  const tok = await ca.token("default", "sleep");
  // 60 s certificates renewed at 90% of their life left: the first renewal is due after ~6 s.
  const agent = await startAgent(
    parseAgentConfig(
      {
        ca: { address: ca.address, rootCertFile: ca.rootCertFile, timeout: 1 },
        keyAlgorithm: "ec-p256",
        certTtl: 60,
        graceRatio: 0.9,
        graceJitter: 0,
        backoff: { initial: 0.1, max: 0.5 },
        identities: [
          { namespace: "default", serviceAccount: "sleep", tokenFile: tok, outDir: join(ca.dir, "out") },
        ],
      },
      "test",
    ),
  );
  try {
    await agent.ready();
    const managed = agent.identities.get("default/sleep")!;
    const held = managed.identity.current()!;
    const serial = managed.identity.status().serial;
    assert.equal(managed.identity.status().state, "valid");

    await ca.stop();
    // A forced renewal fails but the certificate stays.
    await assert.rejects(managed.identity.rotateNow(), /unreachable: nothing is listening there/);
    assert.equal(managed.identity.current(), held);

    // The scheduled renewal comes due and keeps failing with backoff.
    await waitFor(() => managed.identity.status().state === "renewal-overdue", "renewal-overdue");
    await waitFor(() => managed.identity.status().consecutiveFailures >= 3, "several failed attempts");
    const during = managed.identity.status();
    assert.equal(during.serial, serial, "still serving the same certificate");
    assert.ok(during.secondsToExpiry! > 0, "which is still valid");
    assert.match(during.lastError!, /unreachable: nothing is listening there/);
    assert.equal(managed.identity.current(), held);
    assert.equal(agent.status().ready, true, "an overdue but valid certificate keeps the agent ready");
    const metrics = await agent.metrics.registry.metrics();
    assert.match(
      metrics,
      /meshvault_agent_cert_state\{identity="default\/sleep",state="renewal-overdue"\} 1/,
    );
    const failures = /meshvault_agent_renewal_failures_total\{identity="default\/sleep"\} (\d+)/.exec(
      metrics,
    );
    assert.ok(failures && Number(failures[1]) >= 3, "failures are counted");

    // The CA comes back (same data dir and port): the agent recovers by itself.
    await ca.restart();
    await waitFor(() => managed.identity.status().serial !== serial, "a renewed certificate", 20_000);
    const after = managed.identity.status();
    assert.equal(after.state, "valid");
    assert.equal(after.consecutiveFailures, 0);
    assert.notEqual(managed.identity.current(), held);
  } finally {
    await agent.close();
    await ca.dispose();
  }
});
