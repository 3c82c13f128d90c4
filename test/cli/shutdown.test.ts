// Shutdown while a peer hangs: a real TCP peer at VAULT_ADDR accepts connections and never
// answers (cacerts and server), or a gRPC client opens a CreateCertificate stream and never ends
// it (server). SIGTERM must cancel the Vault request in flight, or close the hung stream after
// the grace period, and exit 0 inside the shutdown deadline; otherwise the close would wait on
// the 30 s request timeout (or forever) and the deadline would end the process with exit 1.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
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

/** `meshvault server` on 127.0.0.1 (gRPC on port 0), JSON logs, none of this shell's MESHVAULT_/VAULT_/BAO_ settings. */
function spawnServer(
  authority: string,
  dir: string,
  httpPort: number,
  extraEnv: NodeJS.ProcessEnv = {},
): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (/^(MESHVAULT|VAULT|BAO)_/.test(k)) delete env[k];
  const child = spawnCli(
    [
      "server",
      "--authority",
      authority,
      "--data-dir",
      join(dir, "data"),
      "--grpc-listen",
      "127.0.0.1:0",
      "--http-listen",
      `127.0.0.1:${httpPort}`,
      "--log-format",
      "json",
    ],
    { env: { ...env, ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  for (const s of [child.stdout!, child.stderr!]) s.setEncoding("utf8").on("data", (c: string) => (out += c));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  return { child, output: () => out, exited };
}

test("meshvault server: with a Vault that accepts and never answers it logs its start, /readyz says it waits for Vault, and SIGTERM exits 0 before the deadline", async () => {
  const vault = await startHangingPeer();
  const http = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "meshvault-shutdown-"));
  const { child, output, exited } = spawnServer("vault-sign", dir, http, {
    VAULT_ADDR: vault.url,
    VAULT_TOKEN: "hvs.test-token-not-real",
  });
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
    assert.match(output(), /meshvault CA server listening; starting the authority/);
    assert.ok(child.exitCode === null, "still running");
    child.kill("SIGTERM");
    const code = await exited;
    assert.match(output(), /"msg":"shutting down"/);
    assert.doesNotMatch(output(), /did not finish before the deadline/);
    assert.equal(code, 0, `exit code; output:\n${output()}`);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    vault.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("meshvault server: SIGTERM with a CreateCertificate stream that never ends closes it after the grace period and exits 0", async () => {
  const http = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "meshvault-shutdown-"));
  const { child, output, exited } = spawnServer("local", dir, http);
  let client: http2.ClientHttp2Session | undefined;
  try {
    const grpcPort = await waitFor(
      "the server to be ready",
      async () => {
        const r = await fetch(`http://127.0.0.1:${http}/_status`).catch(() => undefined);
        const status = r?.ok ? ((await r.json()) as { ready: boolean; grpc: { port: number } }) : undefined;
        return status?.ready && status.grpc.port;
      },
      60_000,
    );
    client = http2.connect(`https://127.0.0.1:${grpcPort}`, {
      ca: readFileSync(join(dir, "data", "root-cert.pem"), "utf8"),
    });
    client.on("error", () => {});
    const stream = client.request({
      ":method": "POST",
      ":path": "/istio.v1.auth.IstioCertificateService/CreateCertificate",
      "content-type": "application/grpc",
      te: "trailers",
    });
    stream.on("error", () => {});
    stream.resume();
    const streamClosed = new Promise((resolve) => stream.on("close", resolve));
    // A message prefix announcing 1000 bytes, and 10 of them: never completed, never ended.
    const prefix = Buffer.alloc(15);
    prefix.writeUInt32BE(1000, 1);
    stream.write(prefix);
    if (client.connecting) await once(client, "connect");
    // The server has the stream once it answers a PING sent after it.
    await new Promise<void>((resolve, reject) => client!.ping((err) => (err ? reject(err) : resolve())));

    child.kill("SIGTERM");
    const code = await exited;
    await streamClosed;
    assert.match(output(), /"msg":"shutting down"/);
    assert.match(output(), /the CA gRPC API still had requests open after the shutdown grace period/);
    assert.match(output(), /"msg":"meshvault CA server stopped"/);
    assert.doesNotMatch(output(), /did not finish before the deadline/);
    assert.equal(code, 0, `exit code; output:\n${output()}`);
  } finally {
    client?.destroy();
    if (child.exitCode === null) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
