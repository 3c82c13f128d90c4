// GET / on the HTTP port, loaded in real headless Chromium from a running server after real
// issuance: the DOM shows readiness, the chain (root -> intermediate -> serving leaf) with the
// roots' real SHA-256 fingerprints, an expiry timeline and issuance; a screenshot is saved under
// test-output/ (or $MESHVAULT_TEST_OUTPUT). `meshvault status` prints the same server.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startCaServer, type CaServerHandle } from "../../src/server/run.js";
import { loadServerConfig } from "../../src/config/load.js";
import { silentLogger } from "../../src/log/logger.js";
import { mintLocalToken } from "../../src/identity/local-issuer.js";
import { renderStatusPage } from "../../src/server/status-page.js";
import type { Overview } from "../../src/server/overview.js";
import { caClient } from "../helpers/ca-client.js";
import { cli, REPO } from "../helpers/cli.js";
import { opensslCsr } from "../helpers/openssl.js";
import { freePort } from "../helpers/ports.js";

const execFileP = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), "meshvault-page-"));
const outDir = process.env.MESHVAULT_TEST_OUTPUT ?? join(REPO, "test-output");
let server: CaServerHandle;
let chromium: string;

before(async () => {
  const ensure = await execFileP("bash", [join(REPO, "scripts/ensure-chromium.sh"), "--print"]);
  chromium = ensure.stdout.trim().split("\n").pop()!;
  server = await startCaServer(
    loadServerConfig({
      env: {},
      overrides: { dataDir: join(dir, "ca"), "listen.grpc": "127.0.0.1:0", "listen.http": "127.0.0.1:0" },
    }),
    { log: silentLogger(), defaultMetrics: false },
  );
  await server.firstAttempt;
  const client = caClient(`127.0.0.1:${server.grpcPort}`, server.rootsPem(), undefined, "localhost");
  try {
    const token = await mintLocalToken({
      dataDir: join(dir, "ca"),
      trustDomain: "cluster.local",
      namespace: "default",
      serviceAccount: "sleep",
    });
    const csr = () => opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]).csrPem;
    await client.create(csr(), { token });
    await client.create(csr(), { token });
    await client.create(csr(), { token: "not-a-token" }).catch(() => undefined);
  } finally {
    client.close();
  }
});
after(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Headless Chromium with a fresh profile and nothing running in the background. */
async function browse(args: string[]): Promise<string> {
  const profile = mkdtempSync(join(dir, "chromium-"));
  const { stdout } = await execFileP(
    chromium,
    [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile}`,
      ...args,
    ],
    { maxBuffer: 16 * 1024 * 1024, timeout: 90_000 },
  );
  return stdout;
}

const fingerprint = (pem: string): string => new X509Certificate(pem).fingerprint256;

test("the status page in headless Chromium: readiness, chain with fingerprints, timeline, issuance; screenshot saved", async () => {
  const url = `http://127.0.0.1:${server.httpPort}/`;
  const html = await (await fetch(url)).text();
  // Self-contained: nothing is loaded from anywhere else.
  assert.doesNotMatch(html, /<script|<link|src=|url\((?!#)|@import|https?:\/\/(?!127\.0\.0\.1)/i);

  const dom = await browse(["--dump-dom", url]);
  assert.match(dom, /<span id="readiness" class="badge ready">ready<\/span>/);
  const roles = [...dom.matchAll(/<g class="cert ?" data-role="([^"]+)" data-fingerprint="([^"]+)"/g)].map(
    (m) => [m[1], m[2]],
  );
  assert.deepEqual(
    roles.map((r) => r[0]),
    ["root", "intermediate", "serving (leaf)"],
  );
  assert.equal(roles[0]![1], fingerprint(server.rootsPem()), "the root's real SHA-256 fingerprint");
  assert.equal(
    (dom.match(/<g class="life" data-role=/g) ?? []).length,
    3,
    "an expiry timeline row per certificate",
  );
  assert.match(dom, /class="renew"/, "the serving certificate's renewal point");
  assert.match(dom, /<b id="issued-total">2<\/b> issued/);
  assert.match(dom, /<td>UNAUTHENTICATED<\/td><td>1<\/td>/);

  mkdirSync(outDir, { recursive: true });
  const shot = join(outDir, "status-page.png");
  rmSync(shot, { force: true });
  await browse(["--hide-scrollbars", "--window-size=1300,1000", `--screenshot=${shot}`, url]);
  const png = readFileSync(shot);
  assert.equal(png.subarray(1, 4).toString(), "PNG");
  assert.ok(statSync(shot).size > 10_000, "a real rendering, not a blank image");
});

test("not ready: the page shows the reason", () => {
  const ov: Overview = {
    kind: "server",
    now: new Date().toISOString(),
    authority: "vault-sign",
    trustDomain: "cluster.local",
    ready: false,
    reason: "Vault at http://vault:8200 is sealed: unseal it (bao operator unseal)",
    chain: { roots: [], intermediates: [] },
    issuance: { issued: 0, errors: {}, history: [] },
  };
  const html = renderStatusPage(ov);
  assert.match(
    html,
    /class="badge notready">not ready<\/span> <span id="reason">Vault at http:\/\/vault:8200 is sealed/,
  );
  assert.match(renderStatusPage({ ...ov, reason: "<b>x</b>" }), /&#60;b&#62;x&#60;\/b&#62;/, "escaped");
});

test("meshvault status: the server as a table, JSON and YAML; an agent's status port; exit 1 when unreachable", async () => {
  const env = { ...process.env };
  const t = await cli(["status", `127.0.0.1:${server.httpPort}`], env);
  assert.equal(t.code, 0, t.err);
  assert.match(t.out, /^authority +local \(trust domain cluster\.local\)$/m);
  assert.match(t.out, /^ready +yes$/m);
  assert.match(t.out, /^issued +2 since start/m);
  assert.match(t.out, /^refused +UNAUTHENTICATED 1$/m);
  assert.match(
    t.out,
    /^root +O=meshvault, CN=meshvault root CA \(cluster\.local\) +\d{4}-\d\d-\d\d \d\d:\d\d +in 36\d\dd/m,
  );
  assert.match(t.out, /^intermediate +O=meshvault, CN=meshvault intermediate CA/m);
  assert.match(
    t.out,
    /^serving \(leaf\) +spiffe:\/\/cluster\.local\/ns\/istio-system\/sa\/meshvault .* \d{4}-\d\d-\d\d \d\d:\d\d /m,
  );

  const j = await cli(["status", `http://127.0.0.1:${server.httpPort}`, "-o", "json"], env);
  assert.equal(j.code, 0, j.err);
  const doc = JSON.parse(j.out) as Overview;
  assert.equal(doc.chain.roots[0]!.fingerprint, fingerprint(server.rootsPem()));
  const y = await cli(["status", `127.0.0.1:${server.httpPort}`, "-o", "yaml"], env);
  assert.match(y.out, /^kind: server$/m);

  const closed = await freePort();
  const gone = await cli(["status", `127.0.0.1:${closed}`], env);
  assert.equal(gone.code, 1);
  assert.match(gone.err, /cannot reach http:\/\/127\.0\.0\.1:\d+\/overview: nothing is listening there/);
  assert.equal((await cli(["status", "-o", "xml"], env)).code, 2);
});
