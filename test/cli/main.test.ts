import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cliSync, spawnCli } from "../helpers/cli.js";
import { writeSleepToken } from "../helpers/local-token.js";

test("--version prints the package version", () => {
  const r = cliSync(["--version"]);
  assert.equal(r.code, 0);
  assert.match(r.out.trim(), /^\d+\.\d+\.\d+$/);
});

test("--help lists every command, and each command has --help", () => {
  const r = cliSync(["--help"]);
  assert.equal(r.code, 0);
  for (const c of ["server", "cert", "token", "vault"]) assert.match(r.out, new RegExp(`\\b${c}\\b`));
  const s = cliSync(["server", "--help"]);
  assert.equal(s.code, 0);
  assert.match(s.out, /--trust-domain/);
});

test("a bad config file is refused with exit code 2 and the field named, before anything starts", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-cli-"));
  try {
    const file = join(dir, "bad.yaml");
    writeFileSync(
      file,
      "trustDomain: Example.ORG\ncertificates:\n  maxTtl: forever\nlisten:\n  grcp: 1.2.3.4:1\n",
    );
    const r = cliSync(["server", "-c", file, "--data-dir", join(dir, "data")]);
    assert.equal(r.code, 2);
    assert.match(r.err, /trustDomain: trust domain "Example.ORG"/);
    assert.match(r.err, /certificates.maxTtl: "forever" is not a duration/);
    assert.match(r.err, /listen.grcp: unknown field; did you mean "grpc"\?/);
    const missing = cliSync(["server", "-c", join(dir, "nope.yaml")]);
    assert.equal(missing.code, 2);
    assert.match(missing.err, /cannot read config file .*nope.yaml .*: no such file or directory \(ENOENT\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("token create prints a JWT for the local issuer", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-cli-"));
  try {
    const r = cliSync(["token", "create", "-n", "default", "-s", "sleep", "--data-dir", dir]);
    assert.equal(r.code, 0, r.err);
    const [, payload] = r.out.trim().split(".");
    const claims = JSON.parse(Buffer.from(payload!, "base64url").toString()) as Record<string, unknown>;
    assert.equal(claims.sub, "system:serviceaccount:default:sleep");
    assert.deepEqual(claims.aud, ["istio-ca"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("`meshvault agent` in files-only mode keeps running and renews until told to stop", async () => {
  const { startCaServer } = await import("../../src/server/run.js");
  const { loadServerConfig } = await import("../../src/config/load.js");
  const { silentLogger } = await import("../../src/log/logger.js");
  const { existsSync } = await import("node:fs");
  const dir = mkdtempSync(join(tmpdir(), "meshvault-cli-agent-"));
  const server = await startCaServer(
    loadServerConfig({
      env: {},
      overrides: { dataDir: join(dir, "ca"), "listen.grpc": "127.0.0.1:0", "listen.http": "127.0.0.1:0" },
    }),
    { log: silentLogger(), defaultMetrics: false },
  );
  await server.firstAttempt;
  try {
    const tokenFile = await writeSleepToken(dir, join(dir, "ca"));
    const args = [
      "agent",
      "--ca-address",
      `127.0.0.1:${server.grpcPort}`,
      "--ca-server-name",
      "localhost",
      "--ca-root-cert",
      server.rootCertFile,
      "--token-file",
      tokenFile,
      "--key-algorithm",
      "ec-p256",
      "--no-sds",
      "--out-dir",
      join(dir, "out"),
      "--log-level",
      "warn",
    ];
    const child = spawnCli(args, { stdio: "ignore" });
    let exited: number | null | undefined;
    child.on("exit", (code) => (exited = code));
    for (let i = 0; i < 100 && !existsSync(join(dir, "out", "cert-chain.pem")); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.ok(existsSync(join(dir, "out", "cert-chain.pem")), "certificate written");
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(exited, undefined, "agent still running after issuing");
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
    assert.equal(exited, 0);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
