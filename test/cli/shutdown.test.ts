// Shutdown while Vault hangs (cacerts and server): a real TCP peer at VAULT_ADDR accepts connections and never
// answers. SIGTERM must cancel the request in flight and exit cleanly, well inside the
// shutdown deadline; without cancellation the close would wait on the 30 s request timeout
// and the deadline would end the process with exit 1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnCli } from "../helpers/cli.js";
import { startHangingPeer } from "../helpers/hanging-peer.js";
import { freePort } from "../helpers/ports.js";
import { waitFor } from "../helpers/wait.js";

test("meshvault cacerts: SIGTERM while Vault hangs cancels the request and exits 0 before the deadline", async () => {
  const vault = await startHangingPeer();
  const dir = mkdtempSync(join(tmpdir(), "meshvault-shutdown-"));
  const child = spawnCli(
    ["cacerts", "--source", "vault", "--out-dir", join(dir, "cacerts"), "--data-dir", join(dir, "data")],
    {
      env: {
        ...process.env,
        VAULT_ADDR: vault.url,
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
      async () => vault.accepted() > 0,
      60_000,
    );
    child.kill("SIGTERM");
    const code = await exited;
    assert.match(err, /shutting down/);
    assert.doesNotMatch(err, /did not finish before the deadline/);
    assert.equal(code, 0, `exit code; stderr:\n${err}`);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    vault.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("meshvault server: with a Vault that accepts and never answers it logs its start, /readyz says it waits for Vault, and SIGTERM exits 0 before the deadline", async () => {
  const vault = await startHangingPeer();
  const http = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "meshvault-shutdown-"));
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (/^(MESHVAULT|VAULT|BAO)_/.test(k)) delete env[k];
  const child = spawnCli(
    [
      "server",
      "--authority",
      "vault-sign",
      "--data-dir",
      join(dir, "data"),
      "--grpc-listen",
      "127.0.0.1:0",
      "--http-listen",
      `127.0.0.1:${http}`,
      "--log-format",
      "json",
    ],
    {
      env: { ...env, VAULT_ADDR: vault.url, VAULT_TOKEN: "hvs.test-token-not-real" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  for (const s of [child.stdout!, child.stderr!]) s.setEncoding("utf8").on("data", (c: string) => (out += c));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  try {
    // The first Vault request is in flight (the peer holds it) and the server already serves HTTP.
    const readyz = await waitFor(
      "/readyz to say the server waits for the hanging Vault",
      async () => {
        if (vault.accepted() === 0) return false;
        const r = await fetch(`http://127.0.0.1:${http}/readyz`).catch(() => undefined);
        const body = r ? await r.text() : "";
        return r?.status === 503 && body.includes(`waiting for Vault at ${vault.url}`) && body;
      },
      60_000,
    );
    assert.match(readyz, /the vault-sign authority is starting/);
    assert.match(out, /meshvault CA server listening; starting the authority/);
    assert.ok(child.exitCode === null, "still running");
    child.kill("SIGTERM");
    const code = await exited;
    assert.match(out, /"msg":"shutting down"/);
    assert.doesNotMatch(out, /did not finish before the deadline/);
    assert.equal(code, 0, `exit code; output:\n${out}`);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    vault.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
