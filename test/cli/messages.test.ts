// What an operator reads when something is wrong: exit codes (2 for flags and configuration,
// 1 at run time), "did you mean" for misspelled fields, file errors in words, CA connection
// failures named by cause, and log lines in the shape the reader needs. Every case drives
// the real CLI process.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cli, spawnCli } from "../helpers/cli.js";
import { freePort } from "../helpers/ports.js";
import { waitFor } from "../helpers/wait.js";
import { startCaServer, type CaServerHandle } from "../../src/server/run.js";
import { loadServerConfig } from "../../src/config/load.js";
import { silentLogger } from "../../src/log/logger.js";
import { formatPretty } from "../../src/log/logger.js";
import { writeSleepToken } from "../helpers/local-token.js";

const dir = mkdtempSync(join(tmpdir(), "meshvault-messages-"));
const env = { ...process.env, NO_COLOR: "1" };
let ca: CaServerHandle;
let other: CaServerHandle;
let tokenFile: string;

async function server(name: string): Promise<CaServerHandle> {
  const s = await startCaServer(
    loadServerConfig({
      env: {},
      overrides: {
        dataDir: join(dir, name),
        "listen.grpc": "127.0.0.1:0",
        "listen.http": "127.0.0.1:0",
      },
    }),
    { log: silentLogger(), defaultMetrics: false },
  );
  await s.firstAttempt;
  return s;
}

before(async () => {
  ca = await server("ca");
  other = await server("other");
  tokenFile = await writeSleepToken(dir, join(dir, "ca"));
});
after(async () => {
  await ca.close();
  await other.close();
  rmSync(dir, { recursive: true, force: true });
});

function agentOnce(
  extra: string[],
  out = join(dir, "out"),
  level = "error",
): Promise<Awaited<ReturnType<typeof cli>>> {
  return cli(
    [
      "agent",
      "--once",
      "--token-file",
      tokenFile,
      "--key-algorithm",
      "ec-p256",
      "--out-dir",
      out,
      "--log-level",
      level,
      ...extra,
    ],
    env,
  );
}

const NOISE = /DeprecationWarning|\.c:\d+|0A0000|SSL routines|at .*\.js:\d+/;

test("a mistyped flag exits 2 with commander's suggestion", async () => {
  const r = await cli(["server", "--trust-domian", "x"], env);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /unknown option '--trust-domian'/);
  assert.match(r.err, /Did you mean --trust-domain\?/);
  const bad = await cli(["agent", "--log-format", "xml"], env);
  assert.equal(bad.code, 2, bad.err);
  assert.match(bad.err, /--log-format "xml": use json or pretty/);
  const help = await cli(["server", "--help"], env);
  assert.equal(help.code, 0);
});

test("a bad config exits 2, with 'did you mean' and the given value, in one style for server and agent", async () => {
  const file = join(dir, "bad.yaml");
  writeFileSync(file, "certificates:\n  maxTTL: 90d\nlisten:\n  grcp: 1.2.3.4:1\nlog:\n  format: xml\n");
  const r = await cli(["server", "-c", file], env);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /invalid server configuration \(.*bad\.yaml\):/);
  assert.match(r.err, /certificates\.maxTTL: unknown field; did you mean "maxTtl"\?/);
  assert.match(r.err, /listen\.grcp: unknown field; did you mean "grpc"\?/);
  assert.match(r.err, /log\.format: expected one of "json"\|"pretty"; got "xml"/);

  const agentFile = join(dir, "agent.yaml");
  writeFileSync(
    agentFile,
    "ca:\n  adress: x:1\nidentities:\n  - namespace: a\n    serviceAccount: b\n    outdir: /x\n",
  );
  const a = await cli(["agent", "-c", agentFile], env);
  assert.equal(a.code, 2, a.err);
  assert.match(a.err, /invalid agent configuration \(.*agent\.yaml\):/);
  assert.match(a.err, /ca\.adress: unknown field; did you mean "address"\?/);
  assert.match(a.err, /identities\.0\.outdir: unknown field; did you mean "outDir"\?/);

  const missing = await cli(["server", "-c", join(dir, "nope.yaml")], env);
  assert.equal(missing.code, 2);
  assert.match(
    missing.err,
    /cannot read config file .*nope\.yaml \(-c\/--config or MESHVAULT_CONFIG\): no such file or directory \(ENOENT\)/,
  );
});

test("tunnel client: a non-loopback --listen needs --unsafe-listen (exit 2)", async () => {
  const r = await cli(
    ["tunnel", "client", "--listen", "0.0.0.0:9000", "--connect", "127.0.0.1:1", "--cert-dir", dir],
    env,
  );
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /--listen 0\.0\.0\.0:9000 is not a loopback address.*--unsafe-listen/);
});

test("tunnel: an address that is not host:port is a bad flag (exit 2) naming the flag and the form", async () => {
  const r = await cli(
    ["tunnel", "client", "--listen", "127.0.0.1", "--connect", "127.0.0.1:1", "--cert-dir", dir],
    env,
  );
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /--listen "127\.0\.0\.1" is not host:port \(e\.g\. 127\.0\.0\.1:8443\)/);
  const s = await cli(
    ["tunnel", "server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:1", "--allow-all"].concat([
      "--status",
      "127.0.0.1:99999",
      "--cert-dir",
      dir,
    ]),
    env,
  );
  assert.equal(s.code, 2, s.err);
  assert.match(s.err, /--status "127\.0\.0\.1:99999" is not host:port/);
});

test("tunnel server: a bad --allow pattern is a bad flag (exit 2) naming the flag, the value and the forms", async () => {
  const r = await cli(
    [
      "tunnel",
      "server",
      "--listen",
      "127.0.0.1:0",
      "--target",
      "127.0.0.1:1",
      "--allow",
      "spiffe://cluster.local/ns/*/sa/x",
      "--cert-dir",
      dir,
    ],
    env,
  );
  assert.equal(r.code, 2, r.err);
  assert.match(
    r.err,
    /--allow "spiffe:\/\/cluster\.local\/ns\/\*\/sa\/x": .*use spiffe:\/\/<trust-domain>\/ns\/<ns>\/sa\/<sa>/,
  );
});

test("agent --once: a certificate from an IP address without --ca-server-name, no deprecation warning, JSON logs with level names", async () => {
  const r = await agentOnce(
    ["--ca-address", `127.0.0.1:${ca.grpcPort}`, "--ca-root-cert", ca.rootCertFile],
    join(dir, "ok"),
    "info",
  );
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /spiffe:\/\/cluster\.local\/ns\/default\/sa\/sleep until .* -> /);
  assert.doesNotMatch(r.err, NOISE);
  const lines = r.err
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(lines.length > 0);
  for (const l of lines) assert.ok(["debug", "info", "warn"].includes(String(l.level)), JSON.stringify(l));
});

test("agent --once: CA connection failures name the cause and the fix (exit 1)", async () => {
  const closed = await freePort();
  const cases: [string, string[], RegExp][] = [
    [
      "nothing listening",
      ["--ca-address", `127.0.0.1:${closed}`, "--ca-root-cert", ca.rootCertFile],
      /CA 127\.0\.0\.1:\d+ unreachable: nothing is listening there \(connection refused\); start the CA/,
    ],
    [
      "untrusted",
      ["--ca-address", `127.0.0.1:${ca.grpcPort}`, "--ca-root-cert", other.rootCertFile],
      /TLS trust failure: .*roots from .*other\/root-cert\.pem: O=meshvault, CN=meshvault root CA \(cluster\.local\).*--ca-root-cert/,
    ],
    [
      "name mismatch",
      [
        "--ca-address",
        `127.0.0.1:${ca.grpcPort}`,
        "--ca-root-cert",
        ca.rootCertFile,
        "--ca-server-name",
        "istiod.example",
      ],
      /server name mismatch: its certificate is not for "istiod\.example" \(it names DNS:istiod\.istio-system\.svc, .*DNS:localhost, IP Address:127\.0\.0\.1\); pass --ca-server-name/,
    ],
    [
      "wrong protocol",
      ["--ca-address", `127.0.0.1:${ca.httpPort}`, "--ca-root-cert", ca.rootCertFile],
      /wrong protocol: it does not speak TLS there.*not its HTTP port/,
    ],
    [
      "missing root file",
      ["--ca-address", `127.0.0.1:${ca.grpcPort}`, "--ca-root-cert", join(dir, "none.pem")],
      /cannot read the CA root certificate .*none\.pem: no such file or directory \(ENOENT\); pass --ca-root-cert/,
    ],
  ];
  for (const [name, args, re] of cases) {
    const r = await agentOnce(args);
    assert.equal(r.code, 1, `${name}: ${r.err}`);
    assert.match(r.err, re, name);
    assert.doesNotMatch(r.err, NOISE, name);
  }
});

test("tunnel server: a refused TLS handshake is logged at debug with the reason in words", async () => {
  const certDir = join(dir, "tunnel-certs");
  const ok = await agentOnce(
    [
      "--ca-address",
      `127.0.0.1:${ca.grpcPort}`,
      "--ca-server-name",
      "localhost",
      "--ca-root-cert",
      ca.rootCertFile,
    ],
    certDir,
  );
  assert.equal(ok.code, 0, ok.err);
  const port = await freePort();
  const run = async (level: string): Promise<string> => {
    const child = spawnCli(
      [
        "tunnel",
        "server",
        "--listen",
        `127.0.0.1:${port}`,
        "--target",
        "127.0.0.1:1",
        "--allow-all",
        "--cert-dir",
        certDir,
        "--log-level",
        level,
      ],
      { env, stdio: ["ignore", "ignore", "pipe"] },
    );
    let err = "";
    child.stderr!.setEncoding("utf8").on("data", (c: string) => (err += c));
    try {
      await waitFor("tunnel listening", async () => /tunnel server listening/.test(err));
      const sock = connect(port, "127.0.0.1");
      sock.on("error", () => {});
      sock.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
      await waitFor("the refusal logged", async () => err.includes("TLS handshake refused"));
      sock.destroy();
      return err;
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  };
  const debug = await run("debug");
  const refused = debug
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .find((l) => l.msg === "TLS handshake refused");
  assert.ok(refused, debug);
  assert.equal(refused.level, "debug");
  assert.equal(refused.reason, "the client does not speak TLS (plaintext or HTTP)");
});

test("pretty log lines: local time, level name, component, fields", () => {
  const line = formatPretty(
    JSON.stringify({
      level: "warn",
      time: "2026-01-02T03:04:05.006Z",
      msg: "hello",
      component: "vault",
      n: 1,
    }),
  );
  assert.match(line, /^\d\d:\d\d:\d\d\.\d{3} WARN {2}\[vault\] hello n=1\n$/);
  assert.ok(formatPretty(JSON.stringify({ level: "info", msg: "x" }), true).includes("\u001b[32mINFO"));
});
