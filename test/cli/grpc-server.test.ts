// `meshvault server` as a user runs it, on its default gRPC server (node-http2) and with
// MESHVAULT_GRPC_SERVER=grpc-js: it says which gRPC server it runs, issues over it, and exits 0 on
// SIGTERM; a value it does not know is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cliSync, spawnCli } from "../helpers/cli.js";
import { caClient } from "../helpers/ca-client.js";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { buildCsr } from "../../src/pki/csr.js";
import { generateKeyPairFor } from "../../src/pki/keys.js";
import { parseCertificate } from "../../src/pki/certificate.js";
import { waitFor } from "../helpers/wait.js";

for (const [choice, expected] of [
  [undefined, "node-http2"],
  ["grpc-js", "grpc-js"],
] as const)
  test(`${choice ? `MESHVAULT_GRPC_SERVER=${choice}` : "by default"}: meshvault server serves the CA API on ${expected} and exits 0 on SIGTERM`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "meshvault-grpc-server-"));
    const dataDir = join(dir, "data");
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of Object.keys(env)) if (/^(MESHVAULT|VAULT|BAO)_/.test(k)) delete env[k];
    const child = spawnCli(
      [
        "server",
        "--data-dir",
        dataDir,
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
      ],
      {
        env: { ...env, ...(choice ? { MESHVAULT_GRPC_SERVER: choice } : {}) },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    for (const s of [child.stdout!, child.stderr!])
      s.setEncoding("utf8").on("data", (c: string) => (out += c));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    try {
      const [, grpcPort, httpPort] = await waitFor(
        "the listening log line",
        async () =>
          new RegExp(`"grpc":"[^"]*:(\\d+)","http":"[^"]*:(\\d+)","grpcServer":"${expected}"`).exec(out) ??
          undefined,
        60_000,
      );
      await waitFor(
        "/readyz 200",
        async () =>
          (await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined))?.status === 200,
        60_000,
      );
      const roots = await (await fetch(`http://127.0.0.1:${httpPort}/roots`)).text();
      const client = caClient(`127.0.0.1:${grpcPort}`, roots);
      try {
        const { privateKey } = generateKeyPairFor("ec-p256");
        const id = "spiffe://cluster.local/ns/default/sa/sleep";
        const token = await mintLocalToken({
          dataDir,
          trustDomain: "cluster.local",
          namespace: "default",
          serviceAccount: "sleep",
        });
        const chain = await client.create(buildCsr(privateKey, { uris: [id] }), { token });
        assert.deepEqual(parseCertificate(chain[0]!).sans.uris, [id]);
      } finally {
        client.close();
      }
      child.kill("SIGTERM");
      assert.equal(await exited, 0, out);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });

test("an unknown grpcServer is refused with exit code 2, naming the field and the choices", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-grpc-server-"));
  try {
    const r = cliSync(["server", "--data-dir", join(dir, "data")], { MESHVAULT_GRPC_SERVER: "grpc-go" });
    assert.equal(r.code, 2);
    assert.match(r.err, /grpcServer/);
    assert.match(r.err, /grpc-js/);
    assert.match(r.err, /node-http2/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
