// Property-based fuzzing (fast-check) of the three places untrusted bytes enter: the DER
// reader, the CSR parser and the JWT path. Invariants: only our typed errors are thrown, nothing
// accepted is issued outside the profile, and every run finishes (the test timeout is the
// "never hangs" bound; inputs are bounded). `npm test` runs a bounded number of cases;
// `npm run fuzz` runs many more. Each run prints its seed: replay a failure with
// MESHVAULT_FUZZ_SEED=<seed> (and MESHVAULT_FUZZ_RUNS) plus the path fast-check reports.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import {
  children,
  decodeOne,
  DerError,
  oid,
  seq,
  set,
  smallInteger,
  tlv,
  bitString,
  type Node,
} from "../../src/pki/der.js";
import { buildCsr, CsrError, parseCsr } from "../../src/pki/csr.js";
import {
  encodeBasicConstraints,
  encodeDnsSans,
  encodeExtension,
  encodeUriSans,
} from "../../src/pki/extensions.js";
import {
  generateKeyPairFor,
  signatureSchemeFor,
  signWith,
  spkiDer,
  type KeyAlgorithm,
} from "../../src/pki/keys.js";
import { OID } from "../../src/pki/oids.js";
import { issueLeaf } from "../../src/pki/issue.js";
import { parseCertificateDer } from "../../src/pki/certificate.js";
import { parseWorkloadId } from "../../src/pki/spiffe.js";
import { checkCsrAgainstIdentity, CaServiceError } from "../../src/server/ca-service.js";
import { JwtAuthenticator } from "../../src/identity/jwt.js";
import { AuthenticationError } from "../../src/identity/authenticator.js";
import { makeTestCa } from "../helpers/pki-fixtures.js";

const RUNS = Number(process.env.MESHVAULT_FUZZ_RUNS ?? 200);
const SEED = Number(process.env.MESHVAULT_FUZZ_SEED ?? Date.now() % 2 ** 31);
const params = (runs = RUNS) => ({ numRuns: runs, seed: SEED, endOnFailure: true });
// The seed is printed so any failure can be replayed exactly.
console.log(`fuzz: seed ${SEED}, ${RUNS} runs per property (MESHVAULT_FUZZ_SEED / MESHVAULT_FUZZ_RUNS)`);
const TIMEOUT = Math.max(120_000, RUNS * 100);

const ID = "spiffe://cluster.local/ns/default/sa/sleep";
const ca = makeTestCa("ec-p256");
const ALGS: KeyAlgorithm[] = ["ec-p256", "ec-p384", "rsa-2048", "ed25519"];
const keys = new Map(ALGS.map((a) => [a, generateKeyPairFor(a).privateKey]));

/** Only these may escape the parsers. */
const typed = (err: unknown, ...kinds: (new (...a: never[]) => Error)[]): void => {
  if (!kinds.some((k) => err instanceof k)) throw err;
};

function walk(node: Node, depth = 0): void {
  if (depth > 64 || !(node.tag & 0x20)) return;
  for (const c of children(node)) walk(c, depth + 1);
}

test("DER reader: arbitrary bytes give a tree or a DerError, nothing else", { timeout: TIMEOUT }, () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
      try {
        walk(decodeOne(bytes));
      } catch (err) {
        typed(err, DerError);
      }
    }),
    params(RUNS * 5),
  );
});

/** What any accepted CSR may turn into: the profile, for the caller's ID only. */
function issuedWithinProfile(der: Uint8Array): void {
  let csr;
  try {
    csr = parseCsr(der);
  } catch (err) {
    return typed(err, CsrError);
  }
  try {
    checkCsrAgainstIdentity(csr, parseWorkloadId(ID));
  } catch (err) {
    return typed(err, CaServiceError);
  }
  const leaf = parseCertificateDer(
    issueLeaf(ca.signer, { spki: csr.spki, spiffeId: ID, ttlSeconds: 3600 }).der,
  );
  assert.deepEqual(leaf.sans.uris, [ID]);
  assert.deepEqual(
    [leaf.sans.dnsNames, leaf.sans.ipAddresses, leaf.sans.emails, leaf.sans.other],
    [[], [], [], 0],
  );
  assert.equal(leaf.isCa, false);
  assert.equal(leaf.subject.length, 0);
  assert.deepEqual(Buffer.from(leaf.spki), Buffer.from(spkiDer(csr.publicKey)), "canonical SPKI");
  const rsa = csr.publicKey.asymmetricKeyType === "rsa";
  assert.deepEqual(leaf.keyUsage, rsa ? ["digitalSignature", "keyEncipherment"] : ["digitalSignature"]);
}

test(
  "CSR parser: mutated valid CSRs are refused with a CsrError or issued inside the profile",
  { timeout: TIMEOUT },
  () => {
    const seeds = ALGS.map(
      (a) =>
        parseCsr(buildCsr(keys.get(a)!, { uris: [ID], dnsNames: a === "ec-p256" ? ["x.example"] : [] })).der,
    );
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant("cut" as const), at: fc.nat(), len: fc.integer({ min: 1, max: 16 }) }),
      fc.record({
        kind: fc.constant("insert" as const),
        at: fc.nat(),
        bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
      }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: seeds.length - 1 }),
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        (which, muts) => {
          let b = Buffer.from(seeds[which]!);
          for (const m of muts) {
            const at = m.at % b.length;
            if (m.kind === "flip") b[at]! ^= 1 << m.bit;
            else if (m.kind === "set") b[at] = m.value;
            else if (m.kind === "cut") b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)]);
            else b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
          }
          issuedWithinProfile(new Uint8Array(b));
        },
      ),
      params(),
    );
  },
);

// Structure-aware: well-signed CSRs whose attributes and extensions are random, so the
// signature never saves the parser: only the structure decides.
const extension = fc.oneof(
  fc.constant(encodeExtension(OID.subjectAltName, true, encodeUriSans([ID]))),
  fc.constant(
    encodeExtension(OID.subjectAltName, false, encodeUriSans(["spiffe://cluster.local/ns/other/sa/admin"])),
  ),
  fc.constant(encodeExtension(OID.subjectAltName, false, encodeDnsSans(["evil.example.com"]))),
  fc.constant(encodeExtension(OID.basicConstraints, true, encodeBasicConstraints(true))),
  fc.constant(encodeExtension(OID.basicConstraints, true, encodeBasicConstraints(false))),
  fc.uint8Array({ maxLength: 24 }).map((v) => encodeExtension("1.2.3.4", false, v)),
);
const attribute = fc.oneof(
  fc
    .array(fc.array(extension, { maxLength: 4 }), { minLength: 0, maxLength: 3 })
    .map((values) => seq(oid(OID.extensionRequest), set(...values.map((exts) => seq(...exts))))),
  fc.uint8Array({ maxLength: 16 }).map((v) => seq(oid("1.2.840.113549.1.9.7"), set(tlv(0x0c, v)))),
);

test(
  "CSR parser: well-signed CSRs with random attributes never yield more than the caller's ID",
  { timeout: TIMEOUT },
  () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...ALGS),
        fc.array(attribute, { maxLength: 3 }),
        fc.option(fc.uint8Array({ maxLength: 8 }), { nil: undefined }),
        (alg, attrs, tail) => {
          const key = keys.get(alg)!;
          const info = seq(
            smallInteger(0),
            seq(),
            spkiDer(key),
            tlv(0xa0, ...attrs),
            ...(tail ? [tlv(0x04, tail)] : []),
          );
          const scheme = signatureSchemeFor(alg);
          issuedWithinProfile(seq(info, scheme.algorithmIdentifier, bitString(signWith(key, scheme, info))));
        },
      ),
      params(),
    );
  },
);

const ISSUER = "https://kubernetes.default.svc.cluster.local";
let dir: string;
let signingKey: CryptoKey;
let auth: JwtAuthenticator;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshvault-fuzz-"));
  const pair = await generateKeyPair("ES256", { extractable: true });
  signingKey = pair.privateKey;
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: "k", alg: "ES256" };
  await writeFile(join(dir, "jwks.json"), JSON.stringify({ keys: [jwk] }));
  auth = new JwtAuthenticator({
    trustDomain: "cluster.local",
    issuer: ISSUER,
    jwks: { file: join(dir, "jwks.json") },
  });
});
after(() => rm(dir, { recursive: true, force: true }));

const name = fc.oneof(
  fc.constantFrom("default", "kube-system", "sleep", "a.b", "x", "n".repeat(63)),
  fc.string({ maxLength: 80 }),
  fc.stringMatching(/^[a-z0-9./%-]{0,70}$/),
);

test(
  "JWT path: validly signed tokens with arbitrary names yield a valid workload ID or an AuthenticationError",
  { timeout: TIMEOUT },
  async () => {
    await fc.assert(
      fc.asyncProperty(name, name, fc.boolean(), async (ns, sa, withSub) => {
        const now = Math.floor(Date.now() / 1000);
        let jwt = new SignJWT({ "kubernetes.io": { namespace: ns, serviceaccount: { name: sa } } })
          .setProtectedHeader({ alg: "ES256", kid: "k" })
          .setIssuer(ISSUER)
          .setAudience("istio-ca")
          .setIssuedAt(now)
          .setExpirationTime(now + 600);
        if (withSub) jwt = jwt.setSubject(`system:serviceaccount:${ns}:${sa}`);
        const token = await jwt.sign(signingKey);
        let caller;
        try {
          caller = await auth.authenticate({ authorization: `Bearer ${token}`, peerCertificates: [] });
        } catch (err) {
          return typed(err, AuthenticationError);
        }
        // Accepted: the ID is exactly the workload ID of valid names (never a longer path).
        assert.ok(caller, "a token of this issuer is decided here");
        assert.equal(
          parseWorkloadId(caller.identity.uri, "cluster.local").uri,
          `spiffe://cluster.local/ns/${ns}/sa/${sa}`,
        );
      }),
      params(),
    );
  },
);

test(
  "JWT path: arbitrary and mutated bearer strings give an AuthenticationError, never another error",
  { timeout: TIMEOUT },
  async () => {
    const now = Math.floor(Date.now() / 1000);
    const valid = await new SignJWT({
      "kubernetes.io": { namespace: "default", serviceaccount: { name: "sleep" } },
    })
      .setProtectedHeader({ alg: "ES256", kid: "k" })
      .setIssuer(ISSUER)
      .setAudience("istio-ca")
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(signingKey);
    const token = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.tuple(fc.nat(), fc.string({ minLength: 1, maxLength: 3 })).map(([at, s]) => {
        const i = at % valid.length;
        return valid.slice(0, i) + s + valid.slice(i + 1);
      }),
    );
    await fc.assert(
      fc.asyncProperty(token, async (t) => {
        try {
          const caller = await auth.authenticate({ authorization: `Bearer ${t}`, peerCertificates: [] });
          // undefined: not this issuer's token, left to the next authenticator.
          if (caller) assert.equal(caller.identity.uri, "spiffe://cluster.local/ns/default/sa/sleep");
        } catch (err) {
          typed(err, AuthenticationError);
        }
      }),
      params(),
    );
  },
);
