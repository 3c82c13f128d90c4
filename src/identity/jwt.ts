// JWT caller authentication: Istio agents send their projected service-account
// token as `authorization: Bearer <jwt>`. We verify it offline against the
// issuer's JWKS (file, URL or OIDC discovery) and map the Kubernetes claims to
// `spiffe://<td>/ns/<ns>/sa/<sa>`.
//
// Error messages say what was wrong but never contain the token: they end up in
// gRPC status details and logs, and a projected token is a bearer credential.
import { constants as cryptoConstants, KeyObject, verify as cryptoVerify, type webcrypto } from "node:crypto";
import { stat, readFile } from "node:fs/promises";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type CryptoKey,
  type JSONWebKeySet,
  type JWSHeaderParameters,
  type JWTPayload,
  type FlattenedJWSInput,
} from "jose";
import { istioParts, parseSpiffeId, SpiffeIdError, workloadId, type SpiffeId } from "../pki/spiffe.js";
import {
  AuthenticationError,
  AuthenticatorUnavailableError,
  bearerToken,
  type AuthenticatedCaller,
  type Authenticator,
  type CallerCredentials,
} from "./authenticator.js";

/** Asymmetric JWS algorithms only: HS* would let anyone holding the "public" JWKS forge tokens. */
export const ALLOWED_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "EdDSA",
  "Ed25519",
] as const;

export const DEFAULT_AUDIENCES = ["istio-ca"];
export const DEFAULT_CLOCK_TOLERANCE_SECONDS = 30;

export type JwksSource = { file: string } | { url: string } | { oidcIssuer: string };

export interface JwtLog {
  info(msg: string): void;
  warn(msg: string): void;
}

export interface JwtAuthenticatorOptions {
  /** Trust domain of the SPIFFE IDs we issue. */
  trustDomain: string;
  /** Accepted `iss` values. May be omitted with `jwks.oidcIssuer`, which then is the issuer. */
  issuer?: string | string[];
  /** The token's `aud` must contain one of these (default `["istio-ca"]`, what istio-agent requests). */
  audiences?: string[];
  jwks: JwksSource;
  /** Leeway for exp/nbf, for clock skew between the issuer and us (default 30 s). */
  clockToleranceSeconds?: number;
  /** How often a JWKS file is stat'ed for changes (default 1000 ms; always on an unknown kid). */
  fileCheckIntervalMs?: number;
  /** Remote JWKS: refetch at most this often on an unknown kid (default 30 s). */
  remoteCooldownMs?: number;
  /** Remote JWKS: refetch after this long even when every kid is known (default 10 min). */
  remoteMaxAgeMs?: number;
  /** Remote JWKS / discovery request timeout (default 5 s). */
  fetchTimeoutMs?: number;
  log?: JwtLog;
  /** Verify with jose only, skipping the node:crypto fast path (tests compare the two). */
  joseOnly?: boolean;
}

type KeyResolver = (header: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<CryptoKey>;

/** Thrown inside key resolution when the key source itself failed (not the token). */
class KeySourceError extends Error {
  override name = "KeySourceError";
}

/** A place keys come from; `resolver()` may fail with KeySourceError. */
interface KeySource {
  readonly description: string;
  resolver(): Promise<KeyResolver>;
  /** Called after a kid miss or a bad signature: true when fresh keys may now verify it. */
  refresh(): Promise<boolean>;
  /** Loads or fetches the keys now (startup check); throws KeySourceError. */
  warm(): Promise<void>;
}

function causeText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as Error & { cause?: unknown }).cause;
  // undici reports "fetch failed" and hides ECONNREFUSED & co in `cause`.
  return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
}

/** JWKS file, re-read when its stat changes: a rotated key set is picked up without a restart. */
class FileKeySource implements KeySource {
  readonly description: string;
  private keys: ReturnType<typeof createLocalJWKSet> | undefined;
  private stamp = "";
  private lastCheck = 0;
  private pending: Promise<boolean> | undefined;

  constructor(
    private readonly path: string,
    private readonly intervalMs: number,
    private readonly log: JwtLog | undefined,
  ) {
    this.description = `JWKS file ${path}`;
  }

  async resolver(): Promise<KeyResolver> {
    if (!this.keys || Date.now() - this.lastCheck >= this.intervalMs) await this.reloadIfChanged();
    return this.keys!;
  }

  async refresh(): Promise<boolean> {
    return this.reloadIfChanged();
  }

  async warm(): Promise<void> {
    await this.reloadIfChanged();
  }

  /** Returns true when a new key set was loaded; concurrent callers share one check. */
  private reloadIfChanged(): Promise<boolean> {
    this.pending ??= this.check().finally(() => (this.pending = undefined));
    return this.pending;
  }

  private async check(): Promise<boolean> {
    this.lastCheck = Date.now();
    let stamp: string;
    try {
      // Nanosecond mtime + inode + size: catches in-place rewrites and atomic renames alike.
      const s = await stat(this.path, { bigint: true });
      stamp = `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
    } catch (err) {
      return this.failed(`cannot stat: ${causeText(err)}`);
    }
    if (this.keys && stamp === this.stamp) return false;
    let next: ReturnType<typeof createLocalJWKSet>;
    try {
      const json = JSON.parse(await readFile(this.path, "utf8")) as JSONWebKeySet;
      next = createLocalJWKSet(json);
    } catch (err) {
      // Remember the broken version: it is not re-read (and re-logged) until it changes again.
      if (this.keys) this.stamp = stamp;
      return this.failed(`${causeText(err)} (expected a JSON object {"keys": [...]} of public JWKs)`);
    }
    const first = !this.keys;
    this.keys = next;
    this.stamp = stamp;
    this.log?.info(`${first ? "loaded" : "reloaded"} ${this.description} (${next.jwks().keys.length} keys)`);
    return true;
  }

  private failed(reason: string): boolean {
    // Keep serving with the last good key set: a half-written file must not lock every workload out.
    if (this.keys) {
      this.log?.warn(`${this.description}: ${reason}; keeping the previously loaded keys`);
      return false;
    }
    throw new KeySourceError(`${this.description}: ${reason}`);
  }
}

interface Remote {
  resolve: KeyResolver;
  reload(): Promise<void>;
}

/** Wraps jose's remote set so that fetch failures are distinguishable from bad tokens. */
function remoteKeys(url: URL, o: ResolvedOptions): Remote {
  const remote = createRemoteJWKSet(url, {
    cooldownDuration: o.remoteCooldownMs,
    cacheMaxAge: o.remoteMaxAgeMs,
    timeoutDuration: o.fetchTimeoutMs,
  });
  const fetchFailed = (err: unknown) =>
    new KeySourceError(`cannot fetch JWKS from ${url.href}: ${causeText(err)}`);
  return {
    resolve: async (header, token) => {
      try {
        return await remote(header, token);
      } catch (err) {
        // Token problems (unknown kid, alg/key mismatch) stay token problems.
        if (
          err instanceof errors.JWKSNoMatchingKey ||
          err instanceof errors.JWKSMultipleMatchingKeys ||
          err instanceof errors.JOSENotSupported
        )
          throw err;
        throw fetchFailed(err);
      }
    },
    reload: async () => {
      try {
        await remote.reload();
      } catch (err) {
        throw fetchFailed(err);
      }
    },
  };
}

/** JWKS over HTTP(S); jose caches it and refetches on an unknown kid (rate-limited by cooldown). */
class UrlKeySource implements KeySource {
  readonly description: string;
  private readonly remote: Remote;

  constructor(url: string, opts: ResolvedOptions) {
    this.description = `JWKS URL ${url}`;
    this.remote = remoteKeys(new URL(url), opts);
  }

  async resolver(): Promise<KeyResolver> {
    return this.remote.resolve;
  }

  async refresh(): Promise<boolean> {
    return false; // jose already refetched on the kid miss, subject to the cooldown
  }

  async warm(): Promise<void> {
    await this.remote.reload();
  }
}

/** OIDC discovery: `<issuer>/.well-known/openid-configuration` -> `jwks_uri`, cached once found. */
class OidcKeySource implements KeySource {
  readonly description: string;
  private remote: Remote | undefined;
  private pending: Promise<Remote> | undefined;
  private lastFailure = 0;
  private lastError = "";

  constructor(
    private readonly issuer: string,
    private readonly opts: ResolvedOptions,
  ) {
    this.description = `OIDC issuer ${issuer}`;
  }

  async resolver(): Promise<KeyResolver> {
    return (await this.discovered()).resolve;
  }

  async refresh(): Promise<boolean> {
    return false;
  }

  async warm(): Promise<void> {
    await (await this.discovered()).reload();
  }

  private async discovered(): Promise<Remote> {
    if (this.remote) return this.remote;
    // Do not hammer a down issuer: one discovery attempt per second, others get the last error.
    if (Date.now() - this.lastFailure < 1000) throw new KeySourceError(this.lastError);
    this.pending ??= this.discover().finally(() => (this.pending = undefined));
    return this.pending;
  }

  private async discover(): Promise<Remote> {
    const url = `${this.issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;
    try {
      const res = await fetch(url, {
        headers: { accept: "application/json" },
        redirect: "manual",
        signal: AbortSignal.timeout(this.opts.fetchTimeoutMs),
      });
      if (res.status !== 200) throw new Error(`HTTP ${res.status}, expected 200`);
      const doc = (await res.json()) as { issuer?: unknown; jwks_uri?: unknown };
      // OIDC Discovery 4.3: the document must name the issuer we asked, or it is someone else's.
      if (doc.issuer !== this.issuer)
        throw new Error(
          `document names issuer ${JSON.stringify(doc.issuer)}, not ${JSON.stringify(this.issuer)}`,
        );
      if (typeof doc.jwks_uri !== "string" || doc.jwks_uri === "")
        throw new Error("document has no jwks_uri");
      const jwksUri = new URL(doc.jwks_uri);
      this.opts.log?.info(`${this.description}: JWKS at ${jwksUri.href}`);
      this.remote = remoteKeys(jwksUri, this.opts);
      return this.remote;
    } catch (err) {
      this.lastFailure = Date.now();
      this.lastError = `OIDC discovery at ${url} failed: ${causeText(err)}`;
      throw new KeySourceError(this.lastError);
    }
  }
}

interface ResolvedOptions {
  trustDomain: string;
  issuers: string[];
  audiences: string[];
  clockToleranceSeconds: number;
  fileCheckIntervalMs: number;
  remoteCooldownMs: number;
  remoteMaxAgeMs: number;
  fetchTimeoutMs: number;
  log: JwtLog | undefined;
}

function resolveOptions(o: JwtAuthenticatorOptions): ResolvedOptions {
  let issuers = o.issuer === undefined ? [] : Array.isArray(o.issuer) ? o.issuer : [o.issuer];
  if (issuers.length === 0 && "oidcIssuer" in o.jwks) issuers = [o.jwks.oidcIssuer];
  if (issuers.length === 0 || issuers.some((i) => typeof i !== "string" || i === ""))
    throw new Error(
      "JWT authenticator: issuer must be set (the token's iss, e.g. https://kubernetes.default.svc.cluster.local)",
    );
  const audiences = o.audiences ?? DEFAULT_AUDIENCES;
  if (audiences.length === 0 || audiences.some((a) => a === ""))
    throw new Error("JWT authenticator: audiences must list at least one non-empty audience (istio-ca)");
  return {
    trustDomain: o.trustDomain,
    issuers,
    audiences,
    clockToleranceSeconds: o.clockToleranceSeconds ?? DEFAULT_CLOCK_TOLERANCE_SECONDS,
    fileCheckIntervalMs: o.fileCheckIntervalMs ?? 1000,
    remoteCooldownMs: o.remoteCooldownMs ?? 30_000,
    remoteMaxAgeMs: o.remoteMaxAgeMs ?? 600_000,
    fetchTimeoutMs: o.fetchTimeoutMs ?? 5000,
    log: o.log,
  };
}

/** JSON.stringify, shortened: claim values are echoed for diagnosis, not in full. */
function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

const iso = (seconds: unknown): string =>
  typeof seconds === "number" ? new Date(seconds * 1000).toISOString() : show(seconds);

/** Decodes the payload without verifying it; used only to reject early with a precise reason. */
function peekPayload(token: string): Record<string, unknown> | undefined {
  const part = token.split(".")[1];
  if (part === undefined) return undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
    return v !== null && typeof v === "object" && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
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

/** Header members the fast path understands; anything else (crit, b64, jku, ...) goes to jose. */
const FAST_HEADER_KEYS = new Set(["alg", "kid", "typ"]);
/** Unpadded base64url that WHATWG atob (jose's decoder on Node 20) also accepts. */
const B64URL = /^[A-Za-z0-9_-]*$/;
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function decodeSegment(segment: string): Buffer | undefined {
  if (segment.length % 4 === 1 || !B64URL.test(segment)) return undefined;
  return Buffer.from(segment, "base64url");
}

function jsonObject(segment: string): Record<string, unknown> | undefined {
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

const SA_SUBJECT = /^system:serviceaccount:([^:]+):([^:]+)$/;

interface ClaimedIdentity {
  namespace: string;
  serviceAccount: string;
  from: string;
}

/**
 * Verifies `authorization: Bearer <jwt>`. A missing header, or a scheme other
 * than Bearer (e.g. Basic), is "not mine" (undefined) so that other
 * authenticators get their turn; a Bearer header with a bad token is an
 * AuthenticationError.
 */
export class JwtAuthenticator implements Authenticator {
  readonly name = "jwt";
  private readonly opts: ResolvedOptions;
  private readonly source: KeySource;
  private readonly algorithms: string[] = [...ALLOWED_ALGORITHMS];
  private readonly joseOnly: boolean;
  /** Tokens accepted by the fast path / by jose (the fallback). */
  readonly verified = { fast: 0, jose: 0 };

  constructor(options: JwtAuthenticatorOptions) {
    this.opts = resolveOptions(options);
    this.joseOnly = options.joseOnly ?? false;
    const j = options.jwks;
    if ("file" in j) this.source = new FileKeySource(j.file, this.opts.fileCheckIntervalMs, this.opts.log);
    else if ("url" in j) this.source = new UrlKeySource(j.url, this.opts);
    else if ("oidcIssuer" in j) this.source = new OidcKeySource(j.oidcIssuer, this.opts);
    else throw new Error("JWT authenticator: jwks needs one of file, url or oidcIssuer");
  }

  /** Loads (file) or fetches (URL, OIDC) the keys now, so a bad config fails at startup. */
  async ready(): Promise<void> {
    try {
      await this.source.warm();
    } catch (err) {
      throw this.unavailable(err);
    }
  }

  async authenticate(creds: CallerCredentials): Promise<AuthenticatedCaller | undefined> {
    const token = bearerToken(creds);
    if (token === undefined) return undefined;
    try {
      return await this.verify(token);
    } catch (err) {
      throw scrub(err, token);
    }
  }

  private async verify(token: string): Promise<AuthenticatedCaller> {
    const parts = token.split(".");
    if (parts.length !== 3)
      throw new AuthenticationError(
        `bearer token is not a signed JWT: expected 3 dot-separated parts, got ${parts.length}`,
      );
    this.checkHeader(token);
    const unverified = peekPayload(token);
    if (!unverified)
      throw new AuthenticationError("bearer token payload is not base64url-encoded JSON object");
    // Rejecting on unverified claims is safe (we only ever refuse), gives the precise
    // reason for another cluster's token, and spares a JWKS refetch for its unknown kid.
    this.checkIssuer(unverified.iss);
    this.checkForeignSpiffeId(unverified);

    const payload = await this.verifySignatureAndClaims(token);
    return this.identityFrom(payload);
  }

  private checkHeader(token: string): void {
    let header: JWSHeaderParameters;
    try {
      header = decodeProtectedHeader(token) as JWSHeaderParameters;
    } catch {
      throw new AuthenticationError("bearer token header is not base64url-encoded JSON");
    }
    const alg = header.alg;
    if (typeof alg !== "string" || alg === "")
      throw new AuthenticationError("bearer token header has no alg");
    if (alg.toLowerCase() === "none")
      throw new AuthenticationError(
        "alg none (unsigned token) is not allowed: tokens must be signed by a key in the issuer's JWKS",
      );
    if (/^HS\d+$/i.test(alg))
      throw new AuthenticationError(
        `alg ${alg} (shared-secret HMAC) is not allowed: tokens must be signed with an asymmetric key published in the JWKS`,
      );
    if (!this.algorithms.includes(alg))
      throw new AuthenticationError(
        `alg ${show(alg)} is not allowed; allowed: ${this.algorithms.join(", ")}`,
      );
  }

  private checkIssuer(iss: unknown): void {
    if (iss === undefined) throw new AuthenticationError("token has no iss claim");
    if (typeof iss !== "string" || !this.opts.issuers.includes(iss))
      throw new AuthenticationError(
        `issuer ${show(iss)} is not trusted (trusted: ${show(this.opts.issuers)}); a token from another cluster or trust domain needs that issuer configured`,
      );
  }

  /** A `spiffe_id` or SPIFFE-ID `sub` from another trust domain is someone else's workload. */
  private checkForeignSpiffeId(claims: Record<string, unknown>): void {
    for (const name of ["spiffe_id", "sub"]) {
      const v = claims[name];
      if (typeof v !== "string" || !v.startsWith("spiffe://")) continue;
      let id: SpiffeId;
      try {
        id = parseSpiffeId(v);
      } catch (err) {
        throw new AuthenticationError(`${name} claim is not a valid SPIFFE ID: ${(err as Error).message}`);
      }
      if (id.trustDomain !== this.opts.trustDomain)
        throw new AuthenticationError(
          `token's ${name} is in trust domain ${show(id.trustDomain)}, but this CA issues for trust domain ${show(this.opts.trustDomain)}`,
        );
    }
  }

  /**
   * The hot path: the same checks as jwtVerify below, with node:crypto verifying directly
   * against a cached KeyObject. jose verifies through WebCrypto (a thread-pool job plus
   * P1363->DER conversion and several promise layers per token): an ES256 token cost
   * ~150 us of CPU that way and ~90 us here, and the JWT check was the largest single item
   * in profiles of the gRPC path. Keys still come from jose's key set (same selection rules).
   *
   * It only ever accepts: anything unusual, and every failure, returns undefined and the
   * token goes through jose, which then decides and words the error exactly as before.
   * test/identity/jwt-fast-path.test.ts checks that both paths agree.
   */
  private async fastVerify(token: string): Promise<JWTPayload | undefined> {
    const [h = "", p = "", s = ""] = token.split(".");
    const header = jsonObject(h);
    if (!header) return undefined;
    for (const k of Object.keys(header)) if (!FAST_HEADER_KEYS.has(k)) return undefined;
    const alg = header.alg;
    if (typeof alg !== "string" || !this.algorithms.includes(alg)) return undefined;
    const fast = FAST_ALGS[alg];
    if (!fast) return undefined;
    const sig = decodeSegment(s);
    if (!sig || (fast.sigBytes !== undefined && sig.length !== fast.sigBytes)) return undefined;
    const payload = jsonObject(p);
    if (!payload) return undefined;
    if (!this.claimsAcceptable(payload)) return undefined;

    let cryptoKey: CryptoKey;
    try {
      const keys = await this.source.resolver();
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
  private claimsAcceptable(c: Record<string, unknown>): boolean {
    if (!hasOwn(c, "iss") || !hasOwn(c, "aud") || !hasOwn(c, "exp")) return false;
    if (typeof c.iss !== "string" || !this.opts.issuers.includes(c.iss)) return false;
    const aud = c.aud;
    const audOk =
      typeof aud === "string"
        ? this.opts.audiences.includes(aud)
        : Array.isArray(aud) && this.opts.audiences.some((x) => aud.includes(x));
    if (!audOk) return false;
    const now = Math.floor(Date.now() / 1000);
    const tol = this.opts.clockToleranceSeconds;
    if (!(tol >= 0)) return false; // jose refuses the option itself
    if (c.iat !== undefined && typeof c.iat !== "number") return false;
    if (c.nbf !== undefined && (typeof c.nbf !== "number" || c.nbf > now + tol)) return false;
    return typeof c.exp === "number" && c.exp > now - tol;
  }

  private async verifySignatureAndClaims(token: string): Promise<JWTPayload> {
    const fast = this.joseOnly ? undefined : await this.fastVerify(token);
    if (fast) {
      this.verified.fast++;
      return fast;
    }
    const attempt = async (): Promise<JWTPayload> => {
      const keys = await this.source.resolver();
      const { payload } = await jwtVerify(token, keys, {
        algorithms: this.algorithms,
        issuer: this.opts.issuers,
        audience: this.opts.audiences,
        requiredClaims: ["exp"],
        clockTolerance: this.opts.clockToleranceSeconds,
      });
      return payload;
    };
    try {
      try {
        const payload = await attempt();
        this.verified.jose++;
        return payload;
      } catch (err) {
        // A rotated JWKS file: the new kid (or a new key under the old kid) is not loaded yet.
        const keyMiss =
          err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWSSignatureVerificationFailed;
        if (keyMiss && (await this.source.refresh())) {
          const payload = await attempt();
          this.verified.jose++;
          return payload;
        }
        throw err;
      }
    } catch (err) {
      throw this.translate(err, token);
    }
  }

  private unavailable(err: unknown): Error {
    if (err instanceof AuthenticatorUnavailableError) return err;
    return new AuthenticatorUnavailableError(
      `cannot verify bearer tokens: ${causeText(err)}; callers should retry once the JWKS is reachable`,
    );
  }

  /** jose errors -> AuthenticationError with the reason and what to check. */
  private translate(err: unknown, token: string): Error {
    if (err instanceof KeySourceError) return this.unavailable(err);
    if (err instanceof AuthenticationError || err instanceof AuthenticatorUnavailableError) return err;
    const now = new Date().toISOString();
    const tol = this.opts.clockToleranceSeconds;
    if (err instanceof errors.JWTExpired)
      return new AuthenticationError(
        `token expired at ${iso(err.payload.exp)} (now ${now}, clock tolerance ${tol} s); the workload should use a fresh projected token`,
      );
    if (err instanceof errors.JWTClaimValidationFailed) {
      const p = err.payload;
      switch (err.claim) {
        case "aud":
          return new AuthenticationError(
            `audience ${show(p.aud)} not in ${show(this.opts.audiences)}; request the token with audience ${this.opts.audiences[0]}`,
          );
        case "iss":
          return new AuthenticationError(
            `issuer ${show(p.iss)} is not trusted (trusted: ${show(this.opts.issuers)})`,
          );
        case "exp":
          return new AuthenticationError(
            err.reason === "missing"
              ? "token has no exp claim: tokens without an expiry are not accepted"
              : `token exp claim is invalid: ${err.message}`,
          );
        case "nbf":
          return new AuthenticationError(
            `token is not valid before ${iso(p.nbf)} (now ${now}, clock tolerance ${tol} s): check clock skew`,
          );
        default:
          return new AuthenticationError(`token claim ${err.claim} is invalid: ${err.message}`);
      }
    }
    if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) {
      const h = safeHeader(token);
      return new AuthenticationError(
        `no key in the ${this.source.description} matches the token (kid ${show(h?.kid)}, alg ${show(h?.alg)}): signed by a key that is not published, or the JWKS is stale`,
      );
    }
    if (err instanceof errors.JWSSignatureVerificationFailed)
      return new AuthenticationError(
        `signature invalid: the token was altered, or signed by a different key under the kid of a key in the ${this.source.description}`,
      );
    if (err instanceof errors.JOSEAlgNotAllowed)
      return new AuthenticationError(`token alg is not allowed; allowed: ${this.algorithms.join(", ")}`);
    if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid)
      return new AuthenticationError(`malformed token: ${err.message}`);
    if (err instanceof errors.JOSENotSupported)
      return new AuthenticationError(`token cannot be verified: ${err.message}`);
    if (err instanceof errors.JOSEError) return new AuthenticationError(`token rejected: ${err.message}`);
    return err instanceof Error ? err : new Error(String(err));
  }

  private identityFrom(payload: JWTPayload): AuthenticatedCaller {
    const found: ClaimedIdentity[] = [];
    const k8s = payload["kubernetes.io"];
    if (k8s !== undefined) {
      const ns = (k8s as { namespace?: unknown } | null)?.namespace;
      const sa = (k8s as { serviceaccount?: { name?: unknown } | null } | null)?.serviceaccount?.name;
      if (typeof ns !== "string" || ns === "" || typeof sa !== "string" || sa === "")
        throw new AuthenticationError(
          'token has a kubernetes.io claim without string namespace and serviceaccount.name: expected {"kubernetes.io": {"namespace": ..., "serviceaccount": {"name": ...}}}',
        );
      found.push({ namespace: ns, serviceAccount: sa, from: "kubernetes.io claim" });
    }
    const sub = payload.sub;
    const m = typeof sub === "string" ? sub.match(SA_SUBJECT) : null;
    if (m) found.push({ namespace: m[1]!, serviceAccount: m[2]!, from: "sub" });
    for (const name of ["sub", "spiffe_id"]) {
      const v = payload[name];
      if (typeof v !== "string" || !v.startsWith("spiffe://")) continue;
      // Trust domain was checked before verification; here only Istio-shaped IDs are usable.
      const parts = istioParts(parseSpiffeId(v));
      if (!parts)
        throw new AuthenticationError(`${name} ${show(v)} is not an Istio workload ID (/ns/<ns>/sa/<sa>)`);
      found.push({ ...parts, from: name });
    }
    const first = found[0];
    if (!first)
      throw new AuthenticationError(
        `token carries no namespace/service account: expected a Kubernetes projected token ("kubernetes.io" claim or sub system:serviceaccount:<ns>:<sa>), got sub ${show(sub)}`,
      );
    for (const other of found.slice(1))
      if (other.namespace !== first.namespace || other.serviceAccount !== first.serviceAccount)
        throw new AuthenticationError(
          `token claims disagree: ${first.from} says ${first.namespace}/${first.serviceAccount}, ${other.from} says ${other.namespace}/${other.serviceAccount}`,
        );
    let identity: SpiffeId;
    try {
      identity = workloadId(this.opts.trustDomain, first.namespace, first.serviceAccount);
    } catch (err) {
      if (!(err instanceof SpiffeIdError)) throw err;
      throw new AuthenticationError(
        `namespace ${show(first.namespace)} / service account ${show(first.serviceAccount)} cannot form a SPIFFE ID: ${err.message}`,
      );
    }
    return { identity, method: this.name, namespace: first.namespace, serviceAccount: first.serviceAccount };
  }
}

function safeHeader(token: string): JWSHeaderParameters | undefined {
  try {
    return decodeProtectedHeader(token) as JWSHeaderParameters;
  } catch {
    return undefined;
  }
}

/** Last line of defence: whatever produced the message, the token never leaves in it. */
function scrub(err: unknown, token: string): unknown {
  if (!(err instanceof Error) || !token) return err;
  const [h = "", p = "", s = ""] = token.split(".");
  let msg = err.message.split(token).join("<token>");
  for (const part of [s, p, h]) if (part.length >= 16) msg = msg.split(part).join("<redacted>");
  if (msg !== err.message) err.message = msg;
  return err;
}
