import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { mkdtemp, rm, writeFile, rename } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from "jose";
import { JwtAuthenticator, type JwtAuthenticatorOptions } from "../../src/identity/jwt.js";
import { AuthenticationError, AuthenticatorUnavailableError } from "../../src/identity/authenticator.js";
import { recordingLog } from "../helpers/recording-log.js";

const ISSUER = "https://kubernetes.default.svc.cluster.local";
const TD = "cluster.local";

interface TestKey {
  alg: string;
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function makeKey(alg: "RS256" | "ES256", kid: string): Promise<TestKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { modulusLength: 2048, extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { alg, kid, privateKey, jwk };
}

const now = () => Math.floor(Date.now() / 1000);

/** A Kubernetes projected service-account token's claims, as the kubelet gets them. */
function k8sClaims(ns = "default", sa = "httpbin"): JWTPayload {
  return {
    iss: ISSUER,
    aud: ["istio-ca"],
    sub: `system:serviceaccount:${ns}:${sa}`,
    iat: now(),
    nbf: now(),
    exp: now() + 3600,
    "kubernetes.io": {
      namespace: ns,
      serviceaccount: { name: sa, uid: "0c9ea6d3-7a56-4b1b-9a0e-3d5f6c1b2a11" },
      pod: { name: `${sa}-5d8f7c`, uid: "c2d3" },
    },
  };
}

async function sign(key: TestKey, claims: JWTPayload, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...header })
    .sign(key.privateKey);
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

let dir: string;
let rsa: TestKey;
let ec: TestKey;
let stranger: TestKey;
let jwksFile: string;
let server: Server;
let baseUrl: string;
let served: { keys: JWK[] };

async function writeJwks(path: string, keys: JWK[]): Promise<void> {
  // Write-then-rename, as a ConfigMap/Secret update or a careful operator does.
  await writeFile(`${path}.tmp`, JSON.stringify({ keys }));
  await rename(`${path}.tmp`, path);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshvault-jwt-"));
  rsa = await makeKey("RS256", "rsa-1");
  ec = await makeKey("ES256", "ec-1");
  stranger = await makeKey("RS256", "rsa-1"); // same kid, different key: forged/unknown signer
  jwksFile = join(dir, "jwks.json");
  await writeJwks(jwksFile, [rsa.jwk, ec.jwk]);
  served = { keys: [rsa.jwk, ec.jwk] };
  server = createServer((req, res) => {
    if (req.url === "/jwks.json") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(served));
    } else if (req.url === "/.well-known/openid-configuration") {
      res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ issuer: baseUrl, jwks_uri: `${baseUrl}/jwks.json` }));
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise((r) => server.close(r));
  await rm(dir, { recursive: true, force: true });
});

function fileAuth(extra: Partial<JwtAuthenticatorOptions> = {}): JwtAuthenticator {
  return new JwtAuthenticator({ trustDomain: TD, issuer: ISSUER, jwks: { file: jwksFile }, ...extra });
}

const bearer = (t: string) => ({ authorization: `Bearer ${t}`, peerCertificates: [] });

/** Asserts an AuthenticationError whose message matches and never contains the token. */
async function rejects(
  auth: JwtAuthenticator,
  token: string,
  re: RegExp,
  kind: new (m: string) => Error = AuthenticationError,
): Promise<void> {
  await assert.rejects(auth.authenticate(bearer(token)), (err: Error) => {
    assert.ok(err instanceof kind, `expected ${kind.name}, got ${err.name}: ${err.message}`);
    assert.match(err.message, re);
    assert.ok(!err.message.includes(token), "message must not contain the token");
    for (const part of token.split(".")) if (part.length >= 16) assert.ok(!err.message.includes(part));
    return true;
  });
}

test("a Kubernetes projected token (RS256) maps to spiffe://<td>/ns/<ns>/sa/<sa>", async () => {
  const caller = await fileAuth().authenticate(bearer(await sign(rsa, k8sClaims("bookinfo", "reviews"))));
  assert.equal(caller?.identity.uri, "spiffe://cluster.local/ns/bookinfo/sa/reviews");
  assert.equal(caller?.namespace, "bookinfo");
  assert.equal(caller?.serviceAccount, "reviews");
  assert.equal(caller?.method, "jwt");
});

test("an ES256 token with only the kubernetes.io claim is accepted; the scheme is case-insensitive", async () => {
  const { sub: _sub, ...claims } = k8sClaims("prod", "api");
  const token = await sign(ec, claims);
  const caller = await fileAuth().authenticate({ authorization: `bearer  ${token}`, peerCertificates: [] });
  assert.equal(caller?.identity.uri, "spiffe://cluster.local/ns/prod/sa/api");
});

test("the sub = system:serviceaccount:<ns>:<sa> form is accepted on its own", async () => {
  const token = await sign(rsa, {
    iss: ISSUER,
    aud: "istio-ca",
    sub: "system:serviceaccount:ns1:sa1",
    exp: now() + 600,
  });
  const caller = await fileAuth().authenticate(bearer(token));
  assert.equal(caller?.identity.uri, "spiffe://cluster.local/ns/ns1/sa/sa1");
});

test("no authorization header, or a non-Bearer scheme, is not the JWT authenticator's business", async () => {
  const auth = fileAuth();
  assert.equal(await auth.authenticate({ peerCertificates: [] }), undefined);
  assert.equal(await auth.authenticate({ authorization: "", peerCertificates: [] }), undefined);
  assert.equal(
    await auth.authenticate({ authorization: "Basic dXNlcjpwdw==", peerCertificates: [] }),
    undefined,
  );
  await assert.rejects(auth.authenticate({ authorization: "Bearer ", peerCertificates: [] }), /no token/);
  await rejects(auth, "not-a-jwt", /not a signed JWT: expected 3 dot-separated parts, got 1/);
});

test("expired token is rejected with the expiry time", async () => {
  const exp = now() - 3600;
  const token = await sign(rsa, { ...k8sClaims(), iat: exp - 3600, nbf: exp - 3600, exp });
  await rejects(fileAuth(), token, new RegExp(`expired at ${new Date(exp * 1000).toISOString()}`));
});

test("clock tolerance: just-expired is still accepted within the tolerance", async () => {
  const token = await sign(rsa, { ...k8sClaims(), exp: now() - 10 });
  assert.ok(await fileAuth({ clockToleranceSeconds: 30 }).authenticate(bearer(token)));
  await rejects(fileAuth({ clockToleranceSeconds: 0 }), token, /expired at/);
});

test("not-yet-valid (nbf in the future) is rejected", async () => {
  const token = await sign(rsa, { ...k8sClaims(), nbf: now() + 600 });
  await rejects(fileAuth(), token, /not valid before/);
});

test("a token without exp is rejected", async () => {
  const { exp: _exp, ...claims } = k8sClaims();
  await rejects(fileAuth(), await sign(rsa, claims), /no exp claim/);
});

test("wrong audience is rejected naming the audience and the accepted ones", async () => {
  const token = await sign(rsa, { ...k8sClaims(), aud: ["https://kubernetes.default.svc"] });
  await rejects(fileAuth(), token, /audience \["https:\/\/kubernetes.default.svc"\] not in \["istio-ca"\]/);
  // Configurable audiences.
  assert.ok(await fileAuth({ audiences: ["https://kubernetes.default.svc"] }).authenticate(bearer(token)));
});

test("wrong issuer (another cluster's token) is rejected before any key lookup", async () => {
  const token = await sign(rsa, { ...k8sClaims(), iss: "https://oidc.other-cluster.example" });
  await rejects(fileAuth(), token, /issuer "https:\/\/oidc.other-cluster.example" is not trusted/);
  // Several issuers may be trusted.
  assert.ok(
    await fileAuth({ issuer: [ISSUER, "https://oidc.other-cluster.example"] }).authenticate(bearer(token)),
  );
});

test("a token naming a SPIFFE ID of another trust domain is rejected, naming both", async () => {
  const token = await sign(rsa, {
    ...k8sClaims(),
    spiffe_id: "spiffe://other.example/ns/default/sa/httpbin",
  });
  await rejects(
    fileAuth(),
    token,
    /trust domain "other.example", but this CA issues for trust domain "cluster.local"/,
  );
  const sub = await sign(rsa, {
    iss: ISSUER,
    aud: "istio-ca",
    exp: now() + 60,
    sub: "spiffe://evil.example/ns/a/sa/b",
  });
  await rejects(fileAuth(), sub, /"evil.example"/);
  // A SPIFFE-ID sub in our own trust domain is an identity source (JWT-SVID style).
  const ours = await sign(rsa, {
    iss: ISSUER,
    aud: "istio-ca",
    exp: now() + 60,
    sub: "spiffe://cluster.local/ns/a/sa/b",
  });
  assert.equal(
    (await fileAuth().authenticate(bearer(ours)))?.identity.uri,
    "spiffe://cluster.local/ns/a/sa/b",
  );
});

test("alg none is rejected with a clear message", async () => {
  const token = `${b64({ alg: "none", typ: "JWT" })}.${b64(k8sClaims())}.`;
  await rejects(fileAuth(), token, /alg none \(unsigned token\) is not allowed/);
  const withKid = `${b64({ alg: "none", kid: "rsa-1" })}.${b64(k8sClaims())}.`;
  await rejects(fileAuth(), withKid, /alg none/);
});

test("HS256 (signed with a secret, e.g. the public key bytes) is rejected", async () => {
  const secret = new TextEncoder().encode(JSON.stringify(rsa.jwk));
  const token = await new SignJWT(k8sClaims())
    .setProtectedHeader({ alg: "HS256", kid: "rsa-1" })
    .sign(secret);
  await rejects(fileAuth(), token, /alg HS256 \(shared-secret HMAC\) is not allowed/);
});

test("a token signed by a key that is not in the JWKS is rejected", async () => {
  const unknownKid = { ...stranger, kid: "who-knows" };
  await rejects(
    fileAuth(),
    await sign(unknownKid, k8sClaims()),
    /no key in the JWKS file .* matches the token \(kid "who-knows"/,
  );
  // Same kid as a published key, but a different key: the signature does not verify.
  await rejects(fileAuth(), await sign(stranger, k8sClaims()), /signature invalid/);
});

test("a tampered payload fails signature verification", async () => {
  const token = await sign(rsa, k8sClaims("default", "sleep"));
  const [h, , s] = token.split(".");
  const forged = `${h}.${b64(k8sClaims("kube-system", "admin"))}.${s}`;
  await rejects(fileAuth(), forged, /signature invalid/);
});

test("a signed token without namespace/service-account claims is rejected", async () => {
  const token = await sign(rsa, { iss: ISSUER, aud: "istio-ca", sub: "alice@example.com", exp: now() + 600 });
  await rejects(fileAuth(), token, /no namespace\/service account/);
  const half = await sign(rsa, {
    iss: ISSUER,
    aud: "istio-ca",
    exp: now() + 600,
    "kubernetes.io": { namespace: "x" },
  });
  await rejects(fileAuth(), half, /kubernetes.io claim without string namespace and serviceaccount.name/);
  const bad = await sign(rsa, { ...k8sClaims(), sub: "system:serviceaccount:default:someone-else" });
  await rejects(fileAuth(), bad, /claims disagree/);
});

test("JWKS file rotation: a rewritten file's new key is accepted without a restart", async () => {
  const path = join(dir, "rotating.json");
  await writeJwks(path, [rsa.jwk]);
  const log = recordingLog();
  const auth = new JwtAuthenticator({
    trustDomain: TD,
    issuer: ISSUER,
    jwks: { file: path },
    fileCheckIntervalMs: 60_000,
    log,
  });
  await auth.ready();
  assert.ok(await auth.authenticate(bearer(await sign(rsa, k8sClaims()))));
  const next = await makeKey("ES256", "ec-2");
  await rejects(auth, await sign(next, k8sClaims()), /no key in the JWKS file/);
  await writeJwks(path, [next.jwk]);
  // The unknown kid makes it look at the file again, long before the periodic check.
  assert.ok(await auth.authenticate(bearer(await sign(next, k8sClaims()))));
  // The old key left the set: its tokens stop working.
  await rejects(auth, await sign(rsa, k8sClaims()), /no key in the JWKS file/);
  // A broken rewrite keeps the last good keys.
  await writeFile(path, "{ not json");
  // (an unknown kid makes it read the broken file: refused, and the last good keys still work)
  await rejects(auth, await sign(rsa, k8sClaims()), /no key in the JWKS file/);
  assert.ok(await auth.authenticate(bearer(await sign(next, k8sClaims()))));
  // ...and a fixed file is picked up again.
  const third = await makeKey("ES256", "ec-3");
  await writeJwks(path, [third.jwk]);
  assert.ok(await auth.authenticate(bearer(await sign(third, k8sClaims()))));
  // Each load and the broken rewrite are logged with the file and the count as fields.
  const loads = log.records.filter((r) => r.level === "info");
  assert.deepEqual(
    loads.map((r) => r.obj),
    [1, 1, 1].map((keys) => ({ jwksFile: path, keys })),
  );
  const [broken] = log.records.filter((r) => r.level === "warn");
  assert.equal(broken?.obj.jwksFile, path);
  assert.match(String(broken?.obj.reason), /expected a JSON object/);
});

test("missing JWKS file: ready() and authenticate() report unavailable, naming the file", async () => {
  const auth = new JwtAuthenticator({
    trustDomain: TD,
    issuer: ISSUER,
    jwks: { file: join(dir, "nope.json") },
  });
  await assert.rejects(
    auth.ready(),
    (e: Error) => e instanceof AuthenticatorUnavailableError && /nope\.json/.test(e.message),
  );
  await rejects(auth, await sign(rsa, k8sClaims()), /nope\.json/, AuthenticatorUnavailableError);
});

test("JWKS URL: tokens verify against keys served over HTTP", async () => {
  const auth = new JwtAuthenticator({
    trustDomain: TD,
    issuer: ISSUER,
    jwks: { url: `${baseUrl}/jwks.json` },
  });
  await auth.ready();
  const caller = await auth.authenticate(bearer(await sign(ec, k8sClaims("web", "frontend"))));
  assert.equal(caller?.identity.uri, "spiffe://cluster.local/ns/web/sa/frontend");
  await rejects(auth, await sign(rsa, { ...k8sClaims(), aud: "other" }), /audience "other" not in/);
});

test("JWKS URL: a key added to the served set is picked up on an unknown kid", async () => {
  const auth = new JwtAuthenticator({
    trustDomain: TD,
    issuer: ISSUER,
    jwks: { url: `${baseUrl}/jwks.json` },
    remoteCooldownMs: 0,
  });
  await auth.ready();
  const added = await makeKey("RS256", "rsa-2");
  served = { keys: [rsa.jwk, ec.jwk, added.jwk] };
  try {
    assert.ok(await auth.authenticate(bearer(await sign(added, k8sClaims()))));
  } finally {
    served = { keys: [rsa.jwk, ec.jwk] };
  }
});

test("JWKS URL down: unavailable (retryable), not unauthenticated", async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const auth = new JwtAuthenticator({
    trustDomain: TD,
    issuer: ISSUER,
    jwks: { url: `http://127.0.0.1:${port}/jwks.json` },
  });
  const token = await sign(rsa, k8sClaims());
  await rejects(
    auth,
    token,
    /cannot fetch JWKS from http:\/\/127.0.0.1:\d+\/jwks.json/,
    AuthenticatorUnavailableError,
  );
  await assert.rejects(auth.ready(), AuthenticatorUnavailableError);
  // A JWKS URL answering 404 is just as unavailable.
  const notFound = new JwtAuthenticator({
    trustDomain: TD,
    issuer: ISSUER,
    jwks: { url: `${baseUrl}/missing` },
  });
  await rejects(notFound, token, /cannot fetch JWKS.*200 OK/, AuthenticatorUnavailableError);
});

test("OIDC discovery: issuer -> jwks_uri -> keys; the issuer defaults to the discovered one", async () => {
  const auth = new JwtAuthenticator({ trustDomain: TD, jwks: { oidcIssuer: baseUrl } });
  await auth.ready();
  const token = await sign(rsa, { ...k8sClaims("ns2", "sa2"), iss: baseUrl });
  assert.equal(
    (await auth.authenticate(bearer(token)))?.identity.uri,
    "spiffe://cluster.local/ns/ns2/sa/sa2",
  );
  // Tokens from the Kubernetes issuer name are not this issuer's.
  await rejects(
    auth,
    await sign(rsa, k8sClaims()),
    /issuer "https:\/\/kubernetes.default.svc.cluster.local" is not trusted/,
  );
});

test("OIDC discovery: a document naming another issuer, or an unreachable issuer, is unavailable", async () => {
  const liar = new JwtAuthenticator({ trustDomain: TD, jwks: { oidcIssuer: `${baseUrl}/` } });
  const token = await sign(rsa, { ...k8sClaims(), iss: `${baseUrl}/` });
  await rejects(liar, token, /OIDC discovery .* document names issuer/, AuthenticatorUnavailableError);
  const down = new JwtAuthenticator({ trustDomain: TD, jwks: { oidcIssuer: "http://127.0.0.1:1" } });
  await assert.rejects(
    down.ready(),
    (e: Error) =>
      e instanceof AuthenticatorUnavailableError &&
      /OIDC discovery at http:\/\/127.0.0.1:1\/.well-known\/openid-configuration failed/.test(e.message),
  );
});

test("configuration errors are reported at construction", () => {
  assert.throws(
    () => new JwtAuthenticator({ trustDomain: TD, jwks: { file: jwksFile } }),
    /issuer must be set/,
  );
  assert.throws(
    () => new JwtAuthenticator({ trustDomain: TD, issuer: ISSUER, audiences: [], jwks: { file: jwksFile } }),
    /audiences must list/,
  );
});
