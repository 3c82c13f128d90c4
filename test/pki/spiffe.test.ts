import { test } from "node:test";
import assert from "node:assert/strict";
import {
  istioParts,
  matchesPattern,
  parseSpiffeId,
  SpiffeIdError,
  workloadId,
} from "../../src/pki/spiffe.js";

test("parses a valid Istio workload ID", () => {
  const id = parseSpiffeId("spiffe://cluster.local/ns/default/sa/sleep");
  assert.equal(id.trustDomain, "cluster.local");
  assert.equal(id.path, "/ns/default/sa/sleep");
  assert.deepEqual(istioParts(id), { namespace: "default", serviceAccount: "sleep" });
  assert.equal(workloadId("cluster.local", "default", "sleep").uri, id.uri);
});

test("trust-domain-only ID has an empty path", () => {
  assert.equal(parseSpiffeId("spiffe://example.org").path, "");
  assert.equal(istioParts(parseSpiffeId("spiffe://example.org/x")), undefined);
});

const bad: [string, RegExp][] = [
  ["http://cluster.local/ns/a/sa/b", /scheme must be spiffe/],
  ["SPIFFE://cluster.local/ns/a", /lowercase/],
  ["spiffe://Cluster.local/ns/a", /outside \[a-z0-9.-_\]/],
  ["spiffe://cluster.local:8080/ns/a", /port/],
  ["spiffe://user@cluster.local/ns/a", /userinfo/],
  ["spiffe:///ns/a", /trust domain is empty/],
  ["spiffe://cluster.local/ns//sa/b", /empty segment/],
  ["spiffe://cluster.local/ns/./sa", /'\.' segment/],
  ["spiffe://cluster.local/ns/../sa", /'\.\.' segment/],
  ["spiffe://cluster.local/ns/a/", /must not end with/],
  ["spiffe://cluster.local/ns/a?x=1", /query/],
  ["spiffe://cluster.local/ns/a#f", /fragment/],
  ["spiffe://cluster.local/ns/a%20b", /percent-encoding/],
  [`spiffe://cluster.local/${"a".repeat(2100)}`, /longer than 2048/],
];
for (const [input, re] of bad) {
  test(`rejects ${input.slice(0, 50)}`, () => {
    assert.throws(
      () => parseSpiffeId(input),
      (e: Error) => e instanceof SpiffeIdError && re.test(e.message),
    );
  });
}

test("pattern matching: exact and namespace wildcard", () => {
  const id = parseSpiffeId("spiffe://td/ns/prod/sa/web");
  assert.ok(matchesPattern(id, "spiffe://td/ns/prod/sa/web"));
  assert.ok(matchesPattern(id, "spiffe://td/ns/prod/*"));
  assert.ok(!matchesPattern(id, "spiffe://td/ns/pro/*"));
  assert.ok(!matchesPattern(id, "spiffe://td/ns/prod/sa/we"));
  assert.ok(!matchesPattern(parseSpiffeId("spiffe://td/ns/production/sa/x"), "spiffe://td/ns/prod/*"));
});
