// Closing a server while Vault hangs (issue 13's "done when"): a real TCP peer accepts Vault
// connections and never answers. startCaServer returns with the first Vault request still in
// flight, and close() cancels that request (the peer sees its connection end) and returns
// within the CLI's shutdown deadline instead of waiting out the 30 s request timeout.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { loadServerConfig } from "../../src/config/load.js";
import { silentLogger } from "../../src/log/logger.js";
import { startCaServer } from "../../src/server/run.js";
import { SHUTDOWN_DEADLINE_MS } from "../../src/cli/shutdown.js";
import { startHangingPeer } from "../helpers/hanging-peer.js";
import { waitFor } from "../helpers/wait.js";

test("closing a server while Vault hangs cancels the request in flight and returns within the shutdown deadline", async () => {
  const vault = await startHangingPeer();
  const dir = mkdtempSync(join(tmpdir(), "meshvault-close-"));
  try {
    const config = loadServerConfig({
      env: {},
      overrides: {
        dataDir: join(dir, "data"),
        "listen.grpc": "127.0.0.1:0",
        "listen.http": "127.0.0.1:0",
        "authority.type": "vault-sign",
        "vault.address": vault.url,
        "vault.token": "hvs.test-token-not-real",
      },
    });
    const server = await startCaServer(config, { log: silentLogger(), defaultMetrics: false });
    await waitFor("the first Vault request to reach the hanging peer", async () => vault.accepted() > 0);
    const r = server.readiness();
    assert.ok(!r.ready);
    assert.match(r.reason, new RegExp(`is starting: waiting for Vault at ${vault.url}`));

    const outcome = await Promise.race([
      server.close().then(() => "closed"),
      sleep(SHUTDOWN_DEADLINE_MS, "deadline", { ref: false }),
    ]);
    assert.equal(outcome, "closed", "close() returned before the shutdown deadline");
    // The request was cancelled (its connection ended), not left running in the background.
    await waitFor(
      "the hanging peer to see every connection closed",
      async () => vault.closed() === vault.accepted(),
    );
    await server.firstAttempt;
    assert.equal(server.readiness().ready, false);
  } finally {
    vault.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
