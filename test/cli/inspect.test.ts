import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import {
  formatDuration,
  inspectCertificates,
  inspectReport,
  runCertInspect,
  type InspectReport,
} from "../../src/cli/inspect.js";
import { issueLeaf, parseIssued } from "../../src/pki/issue.js";
import { generateKeyPairFor, spkiDer } from "../../src/pki/keys.js";
import { makeTestCa } from "../helpers/pki-fixtures.js";

const ID = "spiffe://cluster.local/ns/default/sa/sleep";
const NOW = new Date();
const ca = makeTestCa();
const leafKey = generateKeyPairFor("ec-p256");
const leaf = issueLeaf(ca.signer, {
  spki: spkiDer(leafKey.publicKey),
  spiffeId: ID,
  ttlSeconds: 86400,
  now: NOW,
  dnsNames: ["istiod.istio-system.svc"],
  ipAddresses: ["10.0.0.1"],
});
const bundle = leaf.pem + ca.intermediate.pem + ca.root.pem;
/** Exactly 23h 59m before the leaf expires (certificate times have whole seconds). */
const leafNotAfter = parseIssued(leaf).notAfter;
const AT = new Date(leafNotAfter.getTime() - (23 * 3600 + 59 * 60) * 1000);

function lines(report: string): string[] {
  return report.split("\n").map((l) => l.trim());
}

test("leaf + intermediate + root: every field and an OK chain", () => {
  const out = inspectCertificates(bundle, { at: AT });
  const l = lines(out);
  assert.ok(l.includes("certificate 1 of 3 (leaf)"), out);
  assert.ok(l.includes("certificate 2 of 3 (intermediate CA)"), out);
  assert.ok(l.includes("certificate 3 of 3 (root CA)"), out);
  assert.ok(l.includes("subject:        (empty)"), out);
  assert.ok(l.includes("issuer:         O=test, CN=test intermediate"), out);
  assert.ok(l.includes(`spiffe id:      ${ID}`), out);
  assert.ok(l.includes("dns names:      istiod.istio-system.svc"), out);
  assert.ok(l.includes("ip addresses:   10.0.0.1"), out);
  assert.ok(l.includes(`not after:      ${leafNotAfter.toISOString()} (23h 59m left)`), out);
  assert.ok(l.includes("key:            ec-p256"), out);
  assert.ok(l.includes("ca:             no"), out);
  assert.ok(l.includes("ca:             yes, pathLen 0"), out);
  assert.ok(l.includes("key usage:      digitalSignature"), out); // EC key: no keyEncipherment (RFC 8813)
  assert.ok(l.includes("ext key usage:  serverAuth, clientAuth"), out);
  assert.ok(l.includes("key usage:      digitalSignature, keyCertSign, cRLSign"), out);
  assert.ok(l.includes("signature:      ecdsa-with-SHA256"), out);
  assert.ok(
    l.some((x) => /^serial: +[0-9a-f]{30,32}$/.test(x)),
    out,
  );
  assert.equal(
    l.filter(Boolean).at(-1),
    `chain: OK (${ID} -> O=test, CN=test intermediate -> O=test, CN=test root)`,
  );
});

test("expired certificate shows EXPIRED and the chain fails on its expiry", () => {
  const out = inspectCertificates(bundle, { at: new Date(leafNotAfter.getTime() + 3 * 86400_000 + 5000) });
  assert.match(out, /\(EXPIRED 3d ago\)/);
  assert.match(out, /chain: FAILED: .*expired at/);
});

test("time-left formatting", () => {
  assert.equal(formatDuration(23 * 3600_000 + 59 * 60_000 + 59_000), "23h 59m");
  assert.equal(formatDuration(-3 * 86400_000), "3d");
  assert.equal(formatDuration(90 * 86400_000 + 3600_000), "90d 1h");
  assert.equal(formatDuration(45_000), "45s");
  assert.equal(formatDuration(0), "0s");
});

test("broken chains: intermediate from another CA, wrong --roots", () => {
  const other = makeTestCa();
  const mixed = inspectCertificates(leaf.pem + other.intermediate.pem + other.root.pem, { at: AT });
  assert.match(mixed, /chain: FAILED: .*CN=test intermediate.*does not chain to the trust bundle/);

  const wrongRoots = inspectCertificates(leaf.pem + ca.intermediate.pem, { at: AT, roots: other.root.pem });
  assert.match(wrongRoots, /chain: FAILED: .*does not chain/);

  const explicitRoots = inspectCertificates(leaf.pem + ca.intermediate.pem, { at: AT, roots: ca.root.pem });
  assert.match(explicitRoots, /chain: OK \(spiffe:.* -> O=test, CN=test root\)/);

  const noRoot = inspectCertificates(leaf.pem + ca.intermediate.pem, { at: AT });
  assert.match(noRoot, /chain: NOT VERIFIED: no root .*--roots/);
});

test("a root on its own verifies as itself; extra certificates and key blocks are noted", () => {
  assert.match(inspectCertificates(ca.root.pem), /chain: OK \(O=test, CN=test root\)\n$/);
  const other = makeTestCa();
  const out = inspectCertificates(
    bundle + other.root.pem + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    { at: AT },
  );
  assert.match(out, /note: skipped a PRIVATE KEY block/);
  assert.match(out, /note: certificate #4 \(O=test, CN=test root\) is not part of the verified chain/);
  assert.doesNotMatch(out, /AAAA/);
});

test("an unusual key is described, not thrown on", () => {
  // node:crypto still makes 1024-bit RSA keys; meshvault would refuse such a CSR, but inspect must show it.
  const weak = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey;
  const cert = issueLeaf(ca.signer, { spki: spkiDer(weak), spiffeId: ID, ttlSeconds: 3600 });
  const out = inspectCertificates(cert.pem + ca.intermediate.pem + ca.root.pem);
  assert.match(out, /key: +rsa-1024 \(unsupported by meshvault: RSA key of 1024 bits is too small/);
  assert.match(out, /chain: OK/);
});

test("JSON mode parses and carries the same facts", () => {
  const report = JSON.parse(inspectCertificates(bundle, { at: AT, format: "json" })) as InspectReport;
  assert.equal(report.certificates.length, 3);
  const [c0] = report.certificates;
  assert.deepEqual(c0!.spiffeIds, [ID]);
  assert.equal(c0!.role, "leaf");
  assert.equal(c0!.keyType, "ec-p256");
  assert.equal(c0!.status, "valid");
  assert.equal(c0!.secondsLeft, 23 * 3600 + 59 * 60);
  assert.deepEqual(c0!.extKeyUsage, ["serverAuth", "clientAuth"]);
  assert.equal(report.chain.status, "ok");
  assert.deepEqual(report.chain.status === "ok" && report.chain.path.length, 3);
});

test("garbage input is an error naming the input", () => {
  assert.throws(
    () => inspectReport("not a certificate", {}, "/tmp/x.pem"),
    /\/tmp\/x\.pem: no PEM CERTIFICATE/,
  );
});

test("runCertInspect reads a file or stdin and returns 1 when the chain fails", async () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-inspect-"));
  try {
    const file = join(dir, "chain.pem");
    writeFileSync(file, bundle);
    let out = "";
    const stdout = { write: (s: string) => (out += s) };
    assert.equal(await runCertInspect(file, { stdout, at: AT }), 0);
    assert.match(out, /chain: OK/);

    out = "";
    const code = await runCertInspect("-", {
      stdout,
      json: true,
      stdin: Readable.from([Buffer.from(leaf.pem + ca.intermediate.pem)]),
      roots: join(dir, "other-root.pem"),
    }).catch((err: Error) => err.message);
    assert.match(String(code), /cannot read .*other-root\.pem: no such file or directory \(ENOENT\)/);

    writeFileSync(join(dir, "other-root.pem"), makeTestCa().root.pem);
    const failed = await runCertInspect("-", {
      stdout,
      json: true,
      stdin: Readable.from([Buffer.from(leaf.pem + ca.intermediate.pem)]),
      roots: join(dir, "other-root.pem"),
    });
    assert.equal(failed, 1);
    assert.equal((JSON.parse(out) as InspectReport).chain.status, "failed");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("registerCertCommands wires `cert inspect <file> --roots --json` into commander", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-inspect-"));
  try {
    const file = join(dir, "chain.pem");
    writeFileSync(file, leaf.pem + ca.intermediate.pem);
    writeFileSync(join(dir, "root.pem"), ca.root.pem);
    const mod = fileURLToPath(new URL("../../src/cli/commands/cert.ts", import.meta.url));
    const script = `
      import { Command } from "commander";
      import { registerCertCommands } from ${JSON.stringify(mod)};
      const program = new Command("meshvault");
      registerCertCommands(program);
      await program.parseAsync(process.argv.slice(1), { from: "user" });
    `;
    const run = (...args: string[]) =>
      spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script, "--", ...args], {
        encoding: "utf8",
      });
    const ok = run("cert", "inspect", file, "--roots", join(dir, "root.pem"), "--json");
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as InspectReport).chain.status, "ok");
    const missing = run("cert", "inspect", join(dir, "nope.pem"));
    assert.equal(missing.status, 2);
    assert.match(
      missing.stderr,
      /meshvault cert inspect: cannot read .*nope\.pem: no such file or directory \(ENOENT\)/,
    );
    const help = run("cert", "inspect", "--help");
    assert.match(help.stdout, /--roots <file>/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
