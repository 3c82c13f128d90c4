// The fast path of JWT verification: node:crypto against a cached KeyObject instead of jose's
// WebCrypto route. It only ever accepts; anything unusual returns undefined and the caller
// falls back to jose, which decides and words the error.
import { constants as cryptoConstants, KeyObject, verify as cryptoVerify, type webcrypto } from "node:crypto";
import type { CryptoKey, JWSHeaderParameters, JWTPayload } from "jose";
import type { KeySource } from "./jwt-key-sources.js";

/** The claim rules the fast path applies (the same ones the authenticator hands jose). */
export interface FastVerifyPolicy {
  algorithms: readonly string[];
  issuers: readonly string[];
  audiences: readonly string[];
  clockToleranceSeconds: number;
}

/**
 * How node:crypto verifies each allowed alg, and what the CryptoKey jose imported for it must
 * look like (mirrors jose's own checkCryptoKey). ECDSA JWS signatures are raw r||s (P1363).
 */
interface FastAlg {
  hash: string | null;
  subtle: { name: string; hash?: string; namedCurve?: string };
  sigBytes?: number;
  pssSalt?: number;
  minRsaBits?: number;
}
const rsaAlg = (bits: number, pssSalt?: number): FastAlg => ({
  hash: `sha${bits}`,
  subtle: { name: pssSalt ? "RSA-PSS" : "RSASSA-PKCS1-v1_5", hash: `SHA-${bits}` },
  minRsaBits: 2048,
  ...(pssSalt ? { pssSalt } : {}),
});
const FAST_ALGS: Readonly<Record<string, FastAlg>> = {
  RS256: rsaAlg(256),
  RS384: rsaAlg(384),
  RS512: rsaAlg(512),
  PS256: rsaAlg(256, 32),
  PS384: rsaAlg(384, 48),
  PS512: rsaAlg(512, 64),
  ES256: { hash: "sha256", subtle: { name: "ECDSA", namedCurve: "P-256" }, sigBytes: 64 },
  ES384: { hash: "sha384", subtle: { name: "ECDSA", namedCurve: "P-384" }, sigBytes: 96 },
  EdDSA: { hash: null, subtle: { name: "Ed25519" } },
  Ed25519: { hash: null, subtle: { name: "Ed25519" } },
};

/** A compact JWS split once, with its header and payload strictly decoded (undefined where that failed). */
export interface DecodedToken {
  parts: readonly [string, string, string];
  header: Record<string, unknown> | undefined;
  payload: Record<string, unknown> | undefined;
}

/** Splits and decodes a token once for every check that reads it; undefined unless it has 3 parts. */
export function decodeToken(token: string): DecodedToken | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  const [h, p, s] = parts as [string, string, string];
  return { parts: [h, p, s], header: jsonObject(h), payload: jsonObject(p) };
}

/** Header members the fast path understands; anything else (crit, b64, jku, ...) goes to jose. */
const FAST_HEADER_KEYS = new Set(["alg", "kid", "typ"]);
/** Unpadded base64url that WHATWG atob (jose's decoder on Node 20) also accepts. */
const B64URL = /^[A-Za-z0-9_-]*$/;
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function decodeSegment(segment: string): Buffer | undefined {
  if (segment.length % 4 === 1 || !B64URL.test(segment)) return undefined;
  return Buffer.from(segment, "base64url");
}

/** A JWS segment as a JSON object, strictly decoded (the only form the fast path accepts); else undefined. */
export function jsonObject(segment: string): Record<string, unknown> | undefined {
  const bytes = decodeSegment(segment);
  if (!bytes) return undefined;
  try {
    const v: unknown = JSON.parse(strictUtf8.decode(bytes));
    return v !== null && typeof v === "object" && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/** jose's CryptoKeys as KeyObjects, imported once per key (jose caches its CryptoKey per JWK+alg). */
const keyObjects = new WeakMap<object, KeyObject>();
function keyObjectOf(key: CryptoKey): KeyObject {
  let k = keyObjects.get(key);
  if (!k) {
    k = KeyObject.from(key as unknown as webcrypto.CryptoKey);
    keyObjects.set(key, k);
  }
  return k;
}

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

/**
 * The hot path: the same checks as jose's jwtVerify (see JwtAuthenticator), with node:crypto verifying directly
 * against a cached KeyObject. jose verifies through WebCrypto (a thread-pool job plus
 * P1363->DER conversion and several promise layers per token): an ES256 token cost
 * ~150 us of CPU that way and ~90 us here, and the JWT check was the largest single item
 * in profiles of the gRPC path. Keys still come from jose's key set (same selection rules).
 *
 * It only ever accepts: anything unusual, and every failure, returns undefined and the
 * token goes through jose, which then decides and words the error exactly as before.
 * test/identity/jwt-fast-path.test.ts checks that both paths agree.
 */
export async function fastVerify(
  token: DecodedToken,
  policy: FastVerifyPolicy,
  source: KeySource,
): Promise<JWTPayload | undefined> {
  const { parts, header, payload } = token;
  const [h, p, s] = parts;
  if (!header) return undefined;
  for (const k of Object.keys(header)) if (!FAST_HEADER_KEYS.has(k)) return undefined;
  const alg = header.alg;
  if (typeof alg !== "string" || !policy.algorithms.includes(alg)) return undefined;
  const fast = FAST_ALGS[alg];
  if (!fast) return undefined;
  const sig = decodeSegment(s);
  if (!sig || (fast.sigBytes !== undefined && sig.length !== fast.sigBytes)) return undefined;
  if (!payload) return undefined;
  if (!claimsAcceptable(payload, policy)) return undefined;

  let cryptoKey: CryptoKey;
  try {
    const keys = await source.resolver();
    cryptoKey = await keys(header as JWSHeaderParameters, { payload: p, protected: h, signature: s });
  } catch {
    return undefined;
  }
  const a = cryptoKey.algorithm as {
    name: string;
    hash?: { name: string };
    namedCurve?: string;
    modulusLength?: number;
  };
  if (
    cryptoKey.type !== "public" ||
    !cryptoKey.usages.includes("verify") ||
    a.name !== fast.subtle.name ||
    (fast.subtle.hash !== undefined && a.hash?.name !== fast.subtle.hash) ||
    (fast.subtle.namedCurve !== undefined && a.namedCurve !== fast.subtle.namedCurve) ||
    (fast.minRsaBits !== undefined && !((a.modulusLength ?? 0) >= fast.minRsaBits))
  )
    return undefined;
  let ok: boolean;
  try {
    const key = keyObjectOf(cryptoKey);
    const data = Buffer.from(`${h}.${p}`, "latin1");
    ok =
      fast.subtle.name === "ECDSA"
        ? cryptoVerify(fast.hash, data, { key, dsaEncoding: "ieee-p1363" }, sig)
        : fast.pssSalt !== undefined
          ? cryptoVerify(
              fast.hash,
              data,
              { key, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: fast.pssSalt },
              sig,
            )
          : cryptoVerify(fast.hash, data, key, sig);
  } catch {
    return undefined;
  }
  return ok ? (payload as JWTPayload) : undefined;
}
/** jwtVerify's claim checks (iss, aud, required exp, iat/nbf/exp types and times), accept-only. */
function claimsAcceptable(c: Record<string, unknown>, policy: FastVerifyPolicy): boolean {
  if (!hasOwn(c, "iss") || !hasOwn(c, "aud") || !hasOwn(c, "exp")) return false;
  if (typeof c.iss !== "string" || !policy.issuers.includes(c.iss)) return false;
  const aud = c.aud;
  const audOk =
    typeof aud === "string"
      ? policy.audiences.includes(aud)
      : Array.isArray(aud) && policy.audiences.some((x) => aud.includes(x));
  if (!audOk) return false;
  const now = Math.floor(Date.now() / 1000);
  const tol = policy.clockToleranceSeconds;
  if (!(tol >= 0)) return false; // jose refuses the option itself
  if (c.iat !== undefined && typeof c.iat !== "number") return false;
  if (c.nbf !== undefined && (typeof c.nbf !== "number" || c.nbf > now + tol)) return false;
  return typeof c.exp === "number" && c.exp > now - tol;
}
