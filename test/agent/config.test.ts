// The zod-free acceptor (parseValid) against the zod schema it stands in for: same output for
// valid configurations (same keys, same order), and never a configuration zod rejects.
import { test } from "node:test";
import assert from "node:assert/strict";
import { agentConfigSchema, parseAgentConfig, parseValid } from "../../src/agent/config.js";

const BASES: Record<string, unknown>[] = [
  // The CLI's sidecar shape (agentConfigFromFlags).
  {
    ca: { headers: { "foo-bar": "1" }, address: "istiod.istio-system.svc:15012", clusterId: "Kubernetes" },
    identities: [
      {
        tokenFile: "./var/run/secrets/tokens/istio-token",
        namespace: "default",
        serviceAccount: "sleep",
        sdsSocket: "./var/run/secrets/workload-spiffe-uds/socket",
      },
    ],
  },
  { ca: {}, identities: [{ tokenFile: "/t", outDir: "/o" }] },
  // The demo and the benchmark.
  {
    trustDomain: "example.org",
    ca: { address: "localhost:15012", rootCertFile: "/r.pem" },
    keyAlgorithm: "ec-p256",
    identities: [
      { name: "rss-0", tokenFile: "/t0", sdsSocket: "/s/0.sock", outDir: "/o/0" },
      { name: "rss-1", tokenFile: "/t1", sdsSocket: "/s/1.sock", outDir: "/o/1" },
    ],
  },
  // Every field set (a node agent's YAML).
  {
    trustDomain: "td.local",
    ca: {
      address: "[::1]:15012",
      rootCertFile: "/root.pem",
      serverName: "istiod.istio-system.svc",
      clusterId: "c1",
      headers: { a: "1", b: "" },
      timeout: "30s",
    },
    keyAlgorithm: "ec-p384",
    certTtl: "1h30m",
    graceRatio: 0.4,
    graceJitter: 0,
    expiringRatio: 0.1,
    backoff: { initial: "500ms", max: 30 },
    renewWithClientCert: false,
    maxConcurrentRequests: 8,
    statusListen: "127.0.0.1:15020",
    identities: [
      { namespace: "a", serviceAccount: "x", tokenFile: "/t/x", sdsSocket: "/s/x.sock" },
      { spiffeId: "spiffe://td.local/custom/path", tokenFile: "/t/y", outDir: "/o/y", exec: "kill -HUP 1" },
      { name: "z", sdsSocket: "/s/z.sock" },
    ],
  },
];

const VALUES: unknown[] = [
  undefined,
  null,
  "",
  "x",
  "24h",
  "1.5",
  "bad",
  "localhost:1",
  ":15012",
  "[::1]:99999",
  "spiffe://cluster.local/ns/a/sa/b",
  "SPIFFE://cluster.local/ns/a/sa/b",
  "not-spiffe",
  "rsa-2048",
  "ec-p384",
  0,
  -0,
  -1,
  0.01,
  0.5,
  1,
  1.5,
  64,
  2 ** 60,
  NaN,
  Infinity,
  true,
  false,
  [],
  ["x"],
  {},
  { a: "b" },
  { a: 1 },
  Object.create(null) as object,
];

/** Every input derived from `base` by changing or deleting one field (or adding an unknown one). */
function* mutations(base: Record<string, unknown>): Generator<unknown> {
  const clone = (): Record<string, unknown> => structuredClone(base);
  const at = (o: Record<string, unknown>, path: string[]): [Record<string, unknown>, string] | undefined => {
    let cur: unknown = o;
    for (const p of path.slice(0, -1)) {
      if (typeof cur !== "object" || cur === null) return undefined;
      cur = (cur as Record<string, unknown>)[p];
    }
    return typeof cur === "object" && cur !== null
      ? [cur as Record<string, unknown>, path.at(-1)!]
      : undefined;
  };
  const paths: string[][] = [];
  for (const k of [
    "trustDomain",
    "ca",
    "keyAlgorithm",
    "certTtl",
    "graceRatio",
    "graceJitter",
    "expiringRatio",
    "backoff",
    "renewWithClientCert",
    "maxConcurrentRequests",
    "statusListen",
    "identities",
    "unknownField",
  ])
    paths.push([k]);
  for (const k of ["address", "rootCertFile", "serverName", "clusterId", "headers", "timeout", "extra"])
    paths.push(["ca", k]);
  for (const k of ["initial", "max", "extra"]) paths.push(["backoff", k]);
  for (const k of [
    "name",
    "namespace",
    "serviceAccount",
    "spiffeId",
    "tokenFile",
    "sdsSocket",
    "outDir",
    "exec",
    "extra",
  ])
    paths.push(["identities", "0", k]);
  for (const path of paths) {
    for (const v of VALUES) {
      const o = clone();
      const slot = at(o, path);
      if (!slot) continue;
      slot[0][slot[1]] = v;
      yield o;
    }
    const o = clone();
    const slot = at(o, path);
    if (slot) {
      delete slot[0][slot[1]];
      yield o;
    }
  }
  // Duplicates across identities.
  const ids = base.identities as Record<string, unknown>[];
  yield { ...clone(), identities: [...ids, ids[0]] };
  yield { ...clone(), identities: [] };
}

function check(input: unknown): "fast" | "zod" {
  const fast = parseValid(input);
  const ref = agentConfigSchema().safeParse(input);
  if (fast === undefined) return "zod";
  assert.ok(ref.success, `fast path accepted what zod rejects: ${JSON.stringify(input)}`);
  assert.deepEqual(fast, ref.data, JSON.stringify(input));
  // Same key order too (logs and status print these objects).
  assert.equal(JSON.stringify(fast), JSON.stringify(ref.data), JSON.stringify(input));
  return "fast";
}

test("valid configurations take the zod-free path and match the schema exactly", () => {
  for (const base of BASES) assert.equal(check(base), "fast", JSON.stringify(base));
});

test("mutated configurations: the zod-free path matches zod or defers to it", () => {
  let fast = 0;
  let total = 0;
  for (const base of BASES)
    for (const input of mutations(base)) {
      total++;
      if (check(input) === "fast") fast++;
    }
  // Many mutations stay valid (and fast); every invalid one went to zod.
  assert.ok(fast > 100 && fast < total, `${fast} of ${total} fast`);
  for (const input of [undefined, null, "x", 1, [], {}, { identities: [] }])
    assert.equal(check(input), "zod", JSON.stringify(input));
});

test("errors still come from the schema", () => {
  assert.throws(
    () => parseAgentConfig({ identities: [{ namespace: "x", tokenFile: "t" }] }, "flags"),
    /invalid agent configuration \(flags\):\n {2}identities\.0: set both namespace and serviceAccount/,
  );
  assert.throws(
    () => parseAgentConfig({ graceRatio: 2, bogus: 1, identities: [{ outDir: "/o" }] }, "f.yaml"),
    (err: Error) =>
      /\(f\.yaml\):/.test(err.message) &&
      /bogus: unknown field/.test(err.message) &&
      /graceRatio: Too big/.test(err.message),
  );
});
