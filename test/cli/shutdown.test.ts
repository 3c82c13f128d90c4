// Shutdown while Vault hangs: a real TCP peer at VAULT_ADDR accepts connections and never
// answers. SIGTERM must cancel the request in flight and exit cleanly, well inside the
// shutdown deadline; without cancellation the close would wait on the 30 s request timeout
// and the deadline would end the process with exit 1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnCli } from "../helpers/cli.js";
import { waitFor } from "../helpers/wait.js";

test("meshvault cacerts: SIGTERM while Vault hangs cancels the request and exits 0 before the deadline", async () => {
  const sockets: Socket[] = [];
  const hang = createServer((s) => sockets.push(s));
  await new Promise<void>((r) => hang.listen(0, "127.0.0.1", () => r()));
  const port = (hang.address() as { port: number }).port;
  const dir = mkdtempSync(join(tmpdir(), "meshvault-shutdown-"));
  const child = spawnCli(
    ["cacerts", "--source", "vault", "--out-dir", join(dir, "cacerts"), "--data-dir", join(dir, "data")],
    {
      env: {
        ...process.env,
        VAULT_ADDR: `http://127.0.0.1:${port}`,
        VAULT_TOKEN: "hvs.test-token-not-real",
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let err = "";
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (err += c));
  child.stdout!.resume();
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  try {
    await waitFor(
      "cacerts to send its first request to the hanging Vault",
      async () => sockets.length > 0,
      60_000,
    );
    child.kill("SIGTERM");
    const code = await exited;
    assert.match(err, /shutting down/);
    assert.doesNotMatch(err, /did not finish before the deadline/);
    assert.equal(code, 0, `exit code; stderr:\n${err}`);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    for (const s of sockets) s.destroy();
    hang.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
