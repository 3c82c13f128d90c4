// Names that go into certificates are checked when the configuration is read: a bad IP
// address or DNS name is a configuration error naming the field, never a mis-encoded SAN.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadServerConfig } from "../../src/config/load.js";
import { dnsNameProblem, ipAddressProblem } from "../../src/pki/dns-name.js";
import { encodeDnsSans } from "../../src/pki/extensions.js";
import { cliSync } from "../helpers/cli.js";

test("IP addresses: dotted quads 0-255 and IPv6 only", () => {
  for (const ok of ["127.0.0.1", "10.0.0.255", "::1", "fe80::1", "2001:db8:0:0:0:0:0:1"])
    assert.equal(ipAddressProblem(ok), undefined, ok);
  for (const bad of [
    "999.1.1.1",
    "1.2.3.4.5",
    "12345::1",
    "1.2.3",
    "01.2.3.4",
    "fe80::1%eth0",
    "::ffff:1.2.3.4",
    "",
  ])
    assert.ok(ipAddressProblem(bad), bad);
  // The encoder refuses them too (no silent mis-encoding: 999 & 0xff was 231).
  assert.throws(() => encodeDnsSans([], ["999.1.1.1"]), /IP address "999\.1\.1\.1" is not/);
});

test("DNS names: RFC 1034 labels, leading wildcard, length limits", () => {
  for (const ok of ["localhost", "istiod.istio-system.svc", "*.example.com", "a-b.c1", "X.example"])
    assert.equal(dnsNameProblem(ok), undefined, ok);
  for (const bad of [
    "",
    "a..b",
    ".a",
    "a.",
    "-a.b",
    "a-.b",
    "a_b.c",
    "a b",
    "foo.*.com",
    "*",
    "1.2.3.4",
    `${"a".repeat(64)}.b`,
    Array(128).fill("ab").join("."),
  ])
    assert.ok(dnsNameProblem(bad), bad);
});

test("servingCertificate with a bad IP or DNS name is a configuration error naming the field", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-cfg-"));
  try {
    for (const [field, value, re] of [
      ["ipAddresses", "999.1.1.1", /servingCertificate\.ipAddresses\.0.*IP address "999\.1\.1\.1" is not/s],
      ["ipAddresses", "1.2.3.4.5", /IP address "1\.2\.3\.4\.5" is not/],
      ["ipAddresses", "12345::1", /IP address "12345::1" is not/],
      ["dnsNames", "bad_name.svc", /servingCertificate\.dnsNames\.0.*DNS name "bad_name\.svc" has label/s],
    ] as const) {
      const file = join(dir, "c.yaml");
      writeFileSync(file, `servingCertificate:\n  ${field}: ["${value}"]\n`);
      assert.throws(
        () => loadServerConfig({ file, env: {} }),
        (e: Error) => re.test(e.message),
        `${field}: ${value}`,
      );
    }
    writeFileSync(join(dir, "k.yaml"), `kubernetes:\n  istiodCertificate:\n    dnsNames: ["istiod..svc"]\n`);
    assert.throws(
      () => loadServerConfig({ file: join(dir, "k.yaml"), env: {} }),
      /DNS name "istiod\.\.svc" has an empty label/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("`meshvault server` with servingCertificate.ipAddresses 999.1.1.1 exits 2 naming the field", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-cfg-"));
  try {
    const file = join(dir, "c.yaml");
    writeFileSync(file, `dataDir: ${dir}\nservingCertificate:\n  ipAddresses: ["999.1.1.1"]\n`);
    const r = cliSync(["server", "-c", file]);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /invalid server configuration/);
    assert.match(r.err, /servingCertificate\.ipAddresses/);
    assert.match(r.err, /999\.1\.1\.1/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
