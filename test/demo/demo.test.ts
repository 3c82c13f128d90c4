import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { runDemo } from "../../src/demo/index.js";

test("meshvault demo: sleep -> httpbin 200 over mTLS, plaintext fails, not-sleep refused; cleans up", async () => {
  const lines: string[] = [];
  const result = await runDemo({ print: (l) => lines.push(l), keyAlgorithm: "ec-p256" });
  const out = lines.join("\n");
  assert.equal(result.ok, true, out);
  assert.deepEqual(
    result.outcomes.map((o) => o.ok),
    [true, true, true],
  );
  assert.match(result.outcomes[0]!.observed, /^HTTP 200$/);
  assert.match(result.outcomes[1]!.observed, /^connection failed/);
  assert.match(result.outcomes[2]!.observed, /denied/);
  assert.deepEqual(
    result.identities.map((i) => i.spiffeId),
    [
      "spiffe://cluster.local/ns/default/sa/sleep",
      "spiffe://cluster.local/ns/default/sa/httpbin",
      "spiffe://cluster.local/ns/default/sa/not-sleep",
    ],
  );
  for (const i of result.identities) assert.equal(i.chain.length, 3, "leaf, intermediate, root");
  assert.match(out, /all three outcomes hold/);
  const work = /work dir (\S+)\)/.exec(out)?.[1];
  assert.ok(work && !existsSync(work), "temp dir removed");
});

test("demo with the default RSA-2048 workload keys (istio-agent's default)", async () => {
  const result = await runDemo({ print: () => {} });
  assert.equal(result.ok, true);
});
