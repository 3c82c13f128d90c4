// Logins to a Vault that accepts and never answers end when their owner closes or cancels:
// the login's request itself is aborted (the peer sees its connection closed before the
// client is closed), and close() resolves once the login has ended. A real TCP peer.
import { test } from "node:test";
import { once } from "node:events";
import assert from "node:assert/strict";
import { WorkloadTokenCache } from "../../src/authority/vault/index.js";
import { checkLogin } from "../../src/vault/check/connection.js";
import { CheckReport } from "../../src/vault/check/index.js";
import { connectVault, VaultClient, type VaultConnection } from "../../src/vault/index.js";
import { startHangingPeer, type HangingPeer } from "../helpers/hanging-peer.js";
import { spawnCli } from "../helpers/cli.js";
import { waitFor, within } from "../helpers/wait.js";

const FAST = { baseDelayMs: 10, maxDelayMs: 50 };
const APPROLE: VaultConnection["auth"] = {
  method: "approle",
  roleId: "role-id-not-real",
  secretId: "secret-id-not-real",
};

/** Runs `body` with a hanging peer; waits for its first connection through `reached`. */
async function withHangingVault(body: (hang: HangingPeer, reached: () => Promise<void>) => Promise<void>) {
  const hang = await startHangingPeer();
  try {
    await body(hang, async () => {
      await waitFor("the login to reach the hanging Vault", async () => hang.accepted() > 0);
    });
  } finally {
    hang.close();
  }
}

/** The aborted request's connection was closed by the client (before anything closed the client). */
async function connectionClosed(hang: HangingPeer): Promise<void> {
  await waitFor(
    "the hanging Vault to see the login's connection closed",
    async () => hang.closed() === hang.accepted(),
  );
}

test("ConnectedVault.close() during a hung login resolves once the login has ended", async () => {
  await withHangingVault(async (hang, reached) => {
    const vault = connectVault({ address: hang.url, skipVerify: false, auth: APPROLE }, { retry: FAST });
    // Observes the auth method's own login (the token manager calls this same object).
    const login = vault.auth.login.bind(vault.auth);
    let loginEnded = false;
    vault.auth.login = (client, signal) => login(client, signal).finally(() => (loginEnded = true));
    const starting = vault.tokens.start();
    starting.catch(() => undefined);
    await reached();
    await within("close() during the login", vault.close());
    assert.equal(loginEnded, true, "close() resolved before the login it aborted had ended");
    await assert.rejects(starting);
    await connectionClosed(hang);
  });
});

test("closing the workload token cache aborts a hung workload login's request; later logins fail at once", async () => {
  await withHangingVault(async (hang, reached) => {
    const client = new VaultClient({ address: hang.url, skipVerify: false }, { retry: FAST });
    const cache = new WorkloadTokenCache(client, { mount: "jwt", role: "workloads", method: "jwt" });
    const id = "spiffe://cluster.local/ns/default/sa/sleep";
    const token = cache.token(id, "jwt-not-real");
    token.catch(() => undefined);
    await reached();
    cache.close();
    await assert.rejects(within("the login after close()", token), { name: "AbortError" });
    // client.close() would end the request too, so it comes only after.
    await connectionClosed(hang);
    await assert.rejects(cache.token(id, "another-jwt-not-real"), { name: "AbortError" });
    assert.equal(hang.accepted(), 1, "no login is sent after close()");
    client.close();
  });
});

test("vault check: its signal aborts a hung login's request, which is not reported as a failed login", async () => {
  await withHangingVault(async (hang, reached) => {
    const conn: VaultConnection = { address: hang.url, skipVerify: false, auth: APPROLE };
    const client = new VaultClient(conn, { retry: { maxAttempts: 1 } });
    const cancel = new AbortController();
    const report = new CheckReport(() => undefined, cancel.signal);
    const checking = checkLogin(client, conn, report, cancel.signal);
    await reached();
    cancel.abort();
    await assert.rejects(within("the check after the abort", checking), { name: "AbortError" });
    assert.deepEqual(report.lines, [], "a cancelled login is not reported as a failed one");
    await connectionClosed(hang);
    client.close();
  });
});

test("meshvault vault check: SIGTERM while Vault does not answer ends the check at once, saying it was cancelled", async () => {
  await withHangingVault(async (hang, reached) => {
    const child = spawnCli(["vault", "check", "--mode", "vault-sign", "--address", hang.url], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, VAULT_TOKEN: "not-a-real-token" },
    });
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (c: string) => (out += c));
    child.stderr!.resume();
    const exited = once(child, "exit");
    try {
      await reached();
      child.kill("SIGTERM");
      const [code, signal] = (await within("the check to exit after SIGTERM", exited)) as [
        number | null,
        string | null,
      ];
      assert.deepEqual({ code, signal }, { code: 1, signal: null }, out);
      assert.match(
        out,
        /^vault check cancelled: interrupted by SIGTERM, after 0 check\(s\) \(0 failed\); the rest was not checked$/m,
      );
      await connectionClosed(hang);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
