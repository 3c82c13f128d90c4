import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { agentConfigFromFlags } from "../../src/cli/agent.js";
import { registerAgentCommand } from "../../src/cli/commands/agent.js";
import { registerTunnelCommand } from "../../src/cli/commands/tunnel.js";
import { registerDemoCommand } from "../../src/cli/commands/demo.js";
import { cli } from "../helpers/cli.js";
import { makeTestCa } from "../helpers/pki-fixtures.js";
import { busyPort, freePort } from "../helpers/ports.js";

test("sidecar flags and Istio env make one identity with istio-agent's defaults", () => {
  const c = agentConfigFromFlags(
    { sds: true, namespace: "default", serviceAccount: "sleep", caHeader: ["x-tenant=a"] },
    { CA_ADDR: "istiod.istio-system.svc:15012", ISTIO_META_CLUSTER_ID: "Kubernetes", CA_HEADER_FOO_BAR: "1" },
  );
  assert.equal(c.ca.address, "istiod.istio-system.svc:15012");
  assert.equal(c.ca.rootCertFile, "./var/run/secrets/istio/root-cert.pem");
  assert.equal(c.ca.clusterId, "Kubernetes");
  assert.deepEqual(c.ca.headers, { "foo-bar": "1", "x-tenant": "a" });
  assert.equal(c.keyAlgorithm, "rsa-2048");
  assert.equal(c.graceRatio, 0.5);
  assert.equal(c.graceJitter, 0.01);
  assert.equal(c.certTtl, 86400);
  assert.deepEqual(c.identities, [
    {
      namespace: "default",
      serviceAccount: "sleep",
      tokenFile: "./var/run/secrets/tokens/istio-token",
      sdsSocket: "./var/run/secrets/workload-spiffe-uds/socket",
    },
  ]);
  const files = agentConfigFromFlags({ sds: false, outDir: "/tmp/x", keyAlgorithm: "ec-p384" }, {});
  assert.deepEqual(files.identities[0], {
    tokenFile: "./var/run/secrets/tokens/istio-token",
    outDir: "/tmp/x",
  });
  assert.equal(files.keyAlgorithm, "ec-p384");
});

test("node agent YAML lists identities; flags override top-level fields; identity flags are refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-agent-cli-"));
  try {
    const file = join(dir, "agent.yaml");
    writeFileSync(
      file,
      [
        "ca: { address: 'localhost:15012', rootCertFile: /etc/root.pem }",
        "identities:",
        "  - { namespace: a, serviceAccount: x, tokenFile: /t/x, sdsSocket: /s/x.sock }",
        "  - { namespace: b, serviceAccount: y, tokenFile: /t/y, outDir: /o/y, exec: 'kill -HUP 1' }",
      ].join("\n"),
    );
    const c = agentConfigFromFlags({ sds: true, config: file, caAddress: "127.0.0.1:9999" }, {});
    assert.equal(c.ca.address, "127.0.0.1:9999");
    assert.equal(c.ca.rootCertFile, "/etc/root.pem");
    assert.equal(c.identities.length, 2);
    assert.throws(
      () => agentConfigFromFlags({ sds: true, config: file, namespace: "z" }, {}),
      /without --config only/,
    );
    writeFileSync(
      file,
      "identities:\n  - { tokenFile: /t, sdsSocket: /s }\n  - { tokenFile: /t2, sdsSocket: /s }\n",
    );
    assert.throws(
      () => agentConfigFromFlags({ sds: true, config: file }, {}),
      /duplicate identity name|used by two/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("commands register with commander", () => {
  const p = new Command("meshvault");
  registerAgentCommand(p);
  registerTunnelCommand(p);
  registerDemoCommand(p);
  assert.deepEqual(
    p.commands.map((c) => c.name()),
    ["agent", "tunnel", "demo"],
  );
  const tunnel = p.commands.find((c) => c.name() === "tunnel")!;
  assert.deepEqual(
    tunnel.commands.map((c) => c.name()),
    ["server", "client"],
  );
});

test("meshvault agent whose status port is taken exits 1 naming the address and the fix, and removes the SDS socket it had opened", async () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-agent-cli-"));
  const blocker = await busyPort();
  const port = blocker.port;
  try {
    const root = join(dir, "root-cert.pem");
    writeFileSync(root, makeTestCa().root.pem);
    const token = join(dir, "token");
    writeFileSync(token, "not-a-real-token\n");
    const socket = join(dir, "sds", "socket");
    const r = await cli(
      [
        "agent",
        "--ca-address",
        `127.0.0.1:${await freePort()}`,
        "--ca-root-cert",
        root,
        "--token-file",
        token,
        "--sds-socket",
        socket,
        "--status-listen",
        `127.0.0.1:${port}`,
        "--log-format",
        "json",
      ],
      { ...process.env },
    );
    assert.equal(r.code, 1, r.err);
    // The log (stderr, JSON): the socket was served, then closed, before the error ended the process.
    const lines = r.err.trimEnd().split("\n");
    assert.deepEqual(
      lines
        .slice(0, -1)
        .map((l) => (JSON.parse(l) as { msg: string }).msg)
        .filter((m) => m.startsWith("SDS:")),
      ["SDS: serving", "SDS: stopped"],
    );
    assert.match(
      lines.at(-1)!,
      new RegExp(
        `^meshvault: cannot listen on 127\\.0\\.0\\.1:${port} for the agent status port \\(--status-listen, statusListen\\): .*EADDRINUSE.*: another process \\(or another meshvault\\) holds port ${port} there; stop it or choose another port$`,
      ),
    );
    assert.equal(existsSync(socket), false, "no SDS socket file is left behind");
  } finally {
    blocker.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
