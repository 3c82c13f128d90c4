// The JWT authenticator verifies with node:crypto on its hot path and falls back to jose.
// jose is the oracle: for every token here, an authenticator with the fast path and one
// with jose only must reach the same verdict (same identity, or the same error message),
// and the fast path must be the one accepting ordinary tokens (or it is dead code).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  constants,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as cryptoSign,
  type KeyObject,
} from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, type JWK } from "jose";
import { JwtAuthenticator } from "../../src/identity/jwt.js";
import { generateKeyPairFor } from "../../src/pki/keys.js";

const ISSUER = "https://kubernetes.default.svc.cluster.local";
const TD = "cluster.local";
const now = () => Math.floor(Date.now() / 1000);
const b64 = (v: unknown): string =>
  Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

interface Signer {
  kid: string;
  alg: string;
  key: KeyObject;
}

function signRaw(s: Signer, headerB64: string, payloadB64: string): string {
  const data = Buffer.from(`${headerB64}.${payloadB64}`);
  let sig: Buffer;
  if (s.alg.startsWith("ES")) {
    const hash = s.alg === "ES256" ? "sha256" : "sha384";
    sig = cryptoSign(hash, data, { key: s.key, dsaEncoding: "ieee-p1363" });
  } else if (s.alg.startsWith("PS")) {
    sig = cryptoSign("sha256", data, {
      key: s.key,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: 32,
    });
  } else if (s.alg === "EdDSA") {
    sig = cryptoSign(null, data, s.key);
  } else {
    sig = cryptoSign(`sha${s.alg.slice(2)}`, data, s.key);
  }
  return `${headerB64}.${payloadB64}.${sig.toString("base64url")}`;
}

function claims(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: ISSUER,
    aud: ["istio-ca"],
    sub: "system:serviceaccount:default:httpbin",
    iat: now(),
    nbf: now(),
    exp: now() + 3600,
    "kubernetes.io": { namespace: "default", serviceaccount: { name: "httpbin", uid: "u1" } },
    ...extra,
  };
}

function token(
  s: Signer,
  c: Record<string, unknown> = claims(),
  header: Record<string, unknown> = {},
): string {
  return signRaw(s, b64({ alg: s.alg, kid: s.kid, ...header }), b64(c));
}

let dir: string;
let jwksFile: string;
const signers: Record<string, Signer> = {};

async function jwk(s: Signer, extra: Record<string, unknown> = {}): Promise<JWK> {
  return { ...(await exportJWK(s.key)), kid: s.kid, alg: s.alg, use: "sig", ...extra };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshvault-jwt-fast-"));
  const mk = (kid: string, alg: string, gen: () => { privateKey: KeyObject; publicKey: KeyObject }) => {
    const { privateKey, publicKey } = gen();
    signers[kid] = { kid, alg, key: privateKey };
    return { kid, alg, key: publicKey };
  };
  // Keys JWK-exported below come from generateKeyPairFor: on Node 20, exporting a key straight
  // from generateKeyPairSync can deadlock (see generateKeyPairFor).
  const ecc = (curve: string) => () => generateKeyPairFor(curve === "P-256" ? "ec-p256" : "ec-p384");
  const weakRsa = () => {
    const der = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({
      type: "pkcs8",
      format: "der",
    });
    const privateKey = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    return { privateKey, publicKey: createPublicKey(privateKey) };
  };
  const pubs = [
    mk("rsa-1", "RS256", () => generateKeyPairFor("rsa-2048")),
    mk("rs512", "RS512", () => generateKeyPairFor("rsa-2048")),
    mk("pss-1", "PS256", () => generateKeyPairFor("rsa-2048")),
    mk("ec-1", "ES256", ecc("P-256")),
    mk("ec384", "ES384", ecc("P-384")),
    mk("ed-1", "EdDSA", () => generateKeyPairFor("ed25519")),
    mk("weak", "RS256", weakRsa),
    mk("enc-1", "ES256", ecc("P-256")),
    mk("ops-1", "ES256", ecc("P-256")),
    mk("dup", "ES256", ecc("P-256")),
    mk("noalg", "ES256", ecc("P-256")),
  ];
  const other = mk("dup2", "ES256", ecc("P-256"));
  const keys: JWK[] = [];
  for (const p of pubs) {
    const extra: Record<string, unknown> = {};
    if (p.kid === "enc-1") extra.use = "enc";
    if (p.kid === "ops-1") extra.key_ops = ["sign"];
    if (p.kid === "noalg") extra.alg = undefined;
    keys.push(await jwk(p, extra));
  }
  keys.push(await jwk({ ...other, kid: "dup" })); // two keys under one kid
  jwksFile = join(dir, "jwks.json");
  await writeFile(jwksFile, JSON.stringify({ keys }));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Verdict = { ok: string } | { err: string };

async function verdict(auth: JwtAuthenticator, t: string): Promise<Verdict> {
  try {
    const c = await auth.authenticate({ authorization: `Bearer ${t}`, peerCertificates: [] });
    return { ok: c?.identity.uri ?? "(not mine)" };
  } catch (err) {
    // Messages quote "now"; the two calls run a few ms apart.
    return {
      err: `${(err as Error).name}: ${(err as Error).message.replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, "<t>")}`,
    };
  }
}

function pair(): { fast: JwtAuthenticator; oracle: JwtAuthenticator } {
  const o = { trustDomain: TD, issuer: ISSUER, jwks: { file: jwksFile } };
  return { fast: new JwtAuthenticator(o), oracle: new JwtAuthenticator({ ...o, joseOnly: true }) };
}

async function agree(tokens: Record<string, string>): Promise<Record<string, Verdict>> {
  const { fast, oracle } = pair();
  const out: Record<string, Verdict> = {};
  for (const [name, t] of Object.entries(tokens)) {
    const f0 = fast.verified.fast + fast.verified.jose;
    const fastHits0 = fast.verified.fast;
    const o0 = oracle.verified.jose;
    const a = await verdict(fast, t);
    const b = await verdict(oracle, t);
    assert.deepEqual(a, b, `fast path and jose disagree on ${name}`);
    // Signature and claims verdict (before identity mapping) must match too.
    const fastVerified = fast.verified.fast + fast.verified.jose - f0;
    assert.equal(fastVerified, oracle.verified.jose - o0, `${name}: verification verdicts differ`);
    if (fast.verified.fast > fastHits0)
      assert.equal(oracle.verified.jose - o0, 1, `${name}: fast path accepted what jose rejects`);
    out[name] = a;
  }
  return out;
}

test("ordinary tokens of every allowed alg: accepted by the fast path, same identity as jose", async () => {
  const { fast } = pair();
  for (const kid of ["rsa-1", "rs512", "pss-1", "ec-1", "ec384", "ed-1"]) {
    const t = token(signers[kid]!);
    const before = fast.verified.fast;
    assert.deepEqual(await verdict(fast, t), { ok: "spiffe://cluster.local/ns/default/sa/httpbin" }, kid);
    assert.equal(fast.verified.fast, before + 1, `${kid} should take the fast path`);
  }
  const v = await agree(
    Object.fromEntries(["rsa-1", "pss-1", "ec-1", "ed-1"].map((k) => [k, token(signers[k]!)])),
  );
  for (const r of Object.values(v)) assert.ok("ok" in r);
});

test("claims: both paths agree on every accept and reject", async () => {
  const ec = signers["ec-1"]!;
  const t = now();
  const cases: Record<string, Record<string, unknown>> = {
    "aud string": claims({ aud: "istio-ca" }),
    "aud other": claims({ aud: ["kubernetes"] }),
    "aud among others": claims({ aud: ["kubernetes", "istio-ca"] }),
    "aud number": claims({ aud: 5 }),
    "aud missing": claims({ aud: undefined }),
    "iss other": claims({ iss: "https://elsewhere" }),
    "iss number": claims({ iss: 7 }),
    "exp missing": claims({ exp: undefined }),
    "exp string": claims({ exp: String(t + 100) }),
    "exp past": claims({ exp: t - 3600 }),
    "exp within tolerance": claims({ exp: t - 10 }),
    "exp at tolerance edge": claims({ exp: t - 30 }),
    "nbf future": claims({ nbf: t + 3600 }),
    "nbf within tolerance": claims({ nbf: t + 10 }),
    "nbf string": claims({ nbf: "soon" }),
    "iat string": claims({ iat: "then" }),
    "iat null": claims({ iat: null }),
    "nbf null": claims({ nbf: null }),
    "exp float": claims({ exp: t + 100.5 }),
    "no identity": claims({ sub: "someone", "kubernetes.io": undefined }),
    "foreign spiffe sub": claims({ sub: "spiffe://other.td/ns/a/sa/b", "kubernetes.io": undefined }),
    "claims disagree": claims({ sub: "system:serviceaccount:x:y" }),
  };
  await agree(Object.fromEntries(Object.entries(cases).map(([n, c]) => [n, token(ec, c)])));
});

test("headers, keys and encodings: both paths agree", async () => {
  const ec = signers["ec-1"]!;
  const rsa = signers["rsa-1"]!;
  const good = token(ec);
  const [h, p, s] = good.split(".") as [string, string, string];
  const tokens: Record<string, string> = {
    good,
    "crit b64": signRaw(ec, b64({ alg: "ES256", kid: "ec-1", crit: ["b64"], b64: true }), b64(claims())),
    "crit unknown": signRaw(ec, b64({ alg: "ES256", kid: "ec-1", crit: ["x"], x: 1 }), b64(claims())),
    "b64 false without crit": signRaw(ec, b64({ alg: "ES256", kid: "ec-1", b64: false }), b64(claims())),
    "extra header jku": token(ec, claims(), { jku: "https://evil/jwks" }),
    "typ other": token(ec, claims(), { typ: "at+jwt" }),
    "no kid, several candidates": signRaw(ec, b64({ alg: "ES256" }), b64(claims())),
    "numeric kid": signRaw(ec, b64({ alg: "ES256", kid: 1 }), b64(claims())),
    "unknown kid": token({ ...ec, kid: "nope" }),
    "two keys under kid": token(signers["dup"]!),
    "second key under kid": token({ ...signers["dup2"]!, kid: "dup" }),
    "use enc": token(signers["enc-1"]!),
    "key_ops sign only": token(signers["ops-1"]!),
    "jwk without alg": token(signers["noalg"]!),
    "rsa 1024": token(signers["weak"]!),
    "alg/key mismatch": token({ ...rsa, alg: "RS384" }),
    "ES256 header on RSA kid": signRaw(rsa, b64({ alg: "ES256", kid: "rsa-1" }), b64(claims())),
    "PS256 header on RS256 kid": signRaw(
      { ...rsa, alg: "PS256" },
      b64({ alg: "PS256", kid: "rsa-1" }),
      b64(claims()),
    ),
    "ES384 header on ES256 kid": signRaw(
      { ...ec, alg: "ES384" },
      b64({ alg: "ES384", kid: "ec-1" }),
      b64(claims()),
    ),
    "alg none": `${b64({ alg: "none" })}.${p}.`,
    HS256: `${b64({ alg: "HS256", kid: "ec-1" })}.${p}.${s}`,
    "signature altered": `${h}.${p}.${s.slice(0, 10)}${s[10] === "A" ? "B" : "A"}${s.slice(11)}`,
    "payload altered": `${h}.${b64(claims({ "kubernetes.io": { namespace: "kube-system", serviceaccount: { name: "x" } } }))}.${s}`,
    "signature too short": `${h}.${p}.${s.slice(0, -4)}`,
    "signature with padding": `${h}.${p}.${s}==`,
    "signature with space": `${h}.${p}.${s.slice(0, 8)} ${s.slice(8)}`,
    "signature with +/": `${h}.${p}.${s.replace(/-/g, "+").replace(/_/g, "/")}`,
    "signature DER not P1363": `${h}.${p}.${cryptoSign("sha256", Buffer.from(`${h}.${p}`), ec.key).toString("base64url")}`,
    "header with padding": `${h}=.${p}.${s}`,
    "payload mod 4 = 1": `${h}.${p}A.${s}`,
    "payload not UTF-8": signRaw(
      ec,
      h,
      Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]).toString("base64url"),
    ),
    "payload array": signRaw(ec, h, b64([1, 2])),
    "payload not JSON": signRaw(ec, h, b64("hello")),
    "header array": signRaw(ec, b64([1]), p),
    "empty signature": `${h}.${p}.`,
    "four parts": `${good}.x`,
  };
  const v = await agree(tokens);
  assert.ok("ok" in v.good!);
  assert.ok("err" in v["signature altered"]!);
  assert.ok("err" in v["payload altered"]!);
});

test("random single-character mutations: both paths agree", async () => {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
  const base = [token(signers["ec-1"]!), token(signers["rsa-1"]!), token(signers["ed-1"]!)];
  const tokens: Record<string, string> = {};
  let seed = 42;
  const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n;
  for (let i = 0; i < 150; i++) {
    const t = base[i % base.length]!;
    const at = i % 5 === 0 ? t.length - 1 - rnd(3) : rnd(t.length); // the signature's trailing bits too
    tokens[`mutation ${i} at ${at}`] = t.slice(0, at) + alphabet[rnd(alphabet.length)] + t.slice(at + 1);
  }
  await agree(tokens);
});
