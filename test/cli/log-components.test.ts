// The one logger shape as users see it: `meshvault server` (vault-intermediate on a real
// OpenBao) and `meshvault agent` as processes with JSON logs, every component's lines
// carrying `component` (log.child({ component })) and structured fields, never the token.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VaultClient } from "../../src/vault/index.js";
import { cli } from "../helpers/cli.js";
import { writeSleepToken } from "../helpers/local-token.js";
import { startOpenBao, type OpenBao } from "../helpers/openbao.js";
import { startServerProcess, type ServerProcess } from "../helpers/server-process.js";
import { waitFor } from "../helpers/wait.js";

let bao: OpenBao;
let dir: string;
let server: ServerProcess | undefined;
let vaultToken: string;

type Line = Record<string, unknown>;

/** The JSON log lines in `text` (other output, e.g. Node warnings, is skipped). */
function jsonLines(text: string): Line[] {
  return text
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Line);
}

const of = (lines: Line[], component: string): Line[] => lines.filter((l) => l.component === component);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshvault-log-components-"));
  bao = await startOpenBao();
  const admin = new VaultClient({ address: bao.addr, skipVerify: false }, { token: bao.rootToken });
  await admin.write("sys/mounts/pki", { type: "pki", config: { max_lease_ttl: "87600h" } });
  await admin.write("pki/root/generate/internal", {
    common_name: "log test root",
    key_type: "ec",
    ttl: "8760h",
  });
  await admin.write("sys/mounts/pki_int", { type: "pki", config: { max_lease_ttl: "8760h" } });
  // A short renewable token (long enough to outlast a slow start): the server's token manager
  // renews it at about half its life, which is a line from component vault.
  const t = await admin.write<unknown>("auth/token/create", {
    policies: ["root"],
    ttl: "30s",
    renewable: true,
  });
  vaultToken = (t as { auth: { client_token: string } }).auth.client_token;
  admin.close();
});

after(async () => {
  await server?.stop();
  await bao?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("server and agent JSON logs: agent, authority and vault lines carry their component and fields, never the token", async () => {
  server = await startServerProcess(
    "logs",
    dir,
    {
      authority: {
        type: "vault-intermediate",
        mode: "exported",
        rootMount: "pki",
        intermediateMount: "pki_int",
        ttl: "2h",
      },
      vault: { address: bao.addr, auth: { method: "token" } },
      log: { level: "debug", format: "json" },
    },
    { VAULT_TOKEN: vaultToken },
  );
  const s = server;
  const tokenFile = await writeSleepToken(dir, s.dataDir);
  const agent = await cli(
    [
      "agent",
      "--once",
      "--ca-address",
      s.grpc,
      "--ca-root-cert",
      join(s.dataDir, "root-cert.pem"),
      "--token-file",
      tokenFile,
      "--key-algorithm",
      "ec-p256",
      "--out-dir",
      join(dir, "out"),
      "--log-format",
      "json",
      "--log-level",
      "info",
    ],
    { ...process.env, NO_COLOR: "1" },
  );
  assert.equal(agent.code, 0, agent.err);

  const issued = of(jsonLines(agent.err + agent.out), "agent").find(
    (l) => l.msg === "workload certificate issued",
  );
  assert.ok(issued, `an agent line with component "agent":\n${agent.err}`);
  assert.equal(typeof issued.identity, "string");
  assert.equal(issued.spiffeId, "spiffe://cluster.local/ns/default/sa/sleep");

  const renewed = await waitFor(
    "a vault line (token renewal)",
    async () => of(jsonLines(s.output()), "vault").find((l) => l.msg === "renewed the Vault token"),
    45_000,
  );
  assert.equal(typeof renewed.leaseSeconds, "number");
  const lines = jsonLines(s.output());
  const authority = of(lines, "authority");
  assert.ok(authority.length > 0, `lines with component "authority":\n${s.output().slice(-3000)}`);
  assert.ok(authority.every((l) => l.authority === "vault-intermediate"));
  assert.ok(!s.output().includes(vaultToken), "the Vault token is never logged");
});
