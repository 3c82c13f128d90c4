// Names enter through the CLI too: `token create` mints nothing and `agent` starts nothing
// for a namespace or service account that Kubernetes would never allow.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cliSync } from "../helpers/cli.js";

test("`meshvault token create -n 'kube-system/sa/admin'` exits 2 naming the namespace, and writes no token", () => {
  const dir = mkdtempSync(join(tmpdir(), "meshvault-names-"));
  try {
    const out = join(dir, "t.jwt");
    for (const [ns, sa, re] of [
      ["kube-system/sa/admin", "x", /namespace "kube-system\/sa\/admin" is not a DNS-1123 label/],
      ["Default", "sleep", /namespace "Default" is not a DNS-1123 label/],
      ["default", "a/b", /service account "a\/b" is not a DNS-1123 subdomain/],
    ] as const) {
      const r = cliSync(["token", "create", "-n", ns, "-s", sa, "--data-dir", dir, "-o", out]);
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, re);
      assert.equal(existsSync(out), false);
    }
    const ok = cliSync(["token", "create", "-n", "default", "-s", "sleep", "--data-dir", dir, "-o", out]);
    assert.equal(ok.code, 0, ok.err);
    assert.ok(existsSync(out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("`meshvault agent -n Default -s x` exits 2 naming the field before contacting any CA", () => {
  const r = cliSync([
    "agent",
    "--once",
    "-n",
    "Default",
    "-s",
    "sleep",
    "--no-sds",
    "--out-dir",
    "/nonexistent",
  ]);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /namespace.*is not a DNS-1123 label/);
  const r2 = cliSync([
    "agent",
    "--once",
    "-n",
    "default",
    "-s",
    "a_b",
    "--no-sds",
    "--out-dir",
    "/nonexistent",
  ]);
  assert.equal(r2.code, 2, r2.err);
  assert.match(r2.err, /service account.*is not a DNS-1123 subdomain/);
});
