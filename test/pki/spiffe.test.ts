import { test } from "node:test";
import assert from "node:assert/strict";
import {
  istioParts,
  matchesPattern,
  parseSpiffeId,
  parseSpiffePattern,
  parseWorkloadId,
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

test("workload IDs only from Kubernetes-valid names: namespace a DNS-1123 label, service account a DNS-1123 subdomain", () => {
  assert.equal(workloadId("td", "n".repeat(63), "a.b-c").uri, `spiffe://td/ns/${"n".repeat(63)}/sa/a.b-c`);
  for (const [ns, sa, re] of [
    ["kube-system/sa/admin", "x", /namespace "kube-system\/sa\/admin" is not a DNS-1123 label/],
    ["Default", "x", /namespace "Default"/],
    ["a.b", "x", /namespace "a\.b"/],
    ["-a", "x", /namespace "-a"/],
    ["n".repeat(64), "x", /64 characters/],
    ["", "x", /namespace "" is empty/],
    ["a", "X", /service account "X"/],
    ["a", "a..b", /service account "a\.\.b"/],
    ["a", "a_b", /service account "a_b"/],
    ["a", "s".repeat(254), /254 characters/],
    ["a", `${"s".repeat(64)}.b`, /not a DNS-1123 subdomain/],
  ] as const)
    assert.throws(
      () => workloadId("td", ns, sa),
      (e: Error) => e instanceof SpiffeIdError && re.test(e.message),
      `${ns}/${sa}`,
    );
});

test("parseWorkloadId: exactly spiffe://<td>/ns/<ns>/sa/<sa>; istioParts agrees", () => {
  assert.equal(parseWorkloadId("spiffe://td/ns/a/sa/b", "td").uri, "spiffe://td/ns/a/sa/b");
  for (const [input, re] of [
    ["spiffe://td", /not a workload ID/],
    ["spiffe://td/ns/a/sa/b/x", /not a workload ID/],
    ["spiffe://td/sa/b/ns/a", /not a workload ID/],
    ["spiffe://td/ns/A/sa/b", /namespace "A"/],
    ["spiffe://other/ns/a/sa/b", /trust domain other, expected td/],
  ] as const) {
    assert.throws(
      () => parseWorkloadId(input, "td"),
      (e: Error) => e instanceof SpiffeIdError && re.test(e.message),
      input,
    );
    if (input.startsWith("spiffe://td")) assert.equal(istioParts(parseSpiffeId(input)), undefined, input);
  }
});

test("allow-list patterns go through the same parser", () => {
  assert.equal(parseSpiffePattern("spiffe://td/ns/prod/*"), "spiffe://td/ns/prod/*");
  assert.equal(parseSpiffePattern("spiffe://td/*"), "spiffe://td/*");
  for (const bad of [
    "spiffe://td/ns/prod*",
    "spiffe://td/ns/*/sa/x",
    "spiffe://TD/ns/a/*",
    "spiffe://td/ns/../*",
    "spiffe://td/ns/%2e/*",
  ])
    assert.throws(() => parseSpiffePattern(bad), SpiffeIdError, bad);
  // A prefix admits whole segments only, and only IDs that parsed.
  assert.ok(
    !matchesPattern(parseSpiffeId("spiffe://td/ns/kube-systemx/sa/a"), "spiffe://td/ns/kube-system/*"),
  );
});
