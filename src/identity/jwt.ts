// JWT caller authentication: Istio agents send their projected service-account
// token as `authorization: Bearer <jwt>`. We verify it offline against the
// issuer's JWKS (file, URL or OIDC discovery) and map the Kubernetes claims to
// `spiffe://<td>/ns/<ns>/sa/<sa>`.
//
// Error messages say what was wrong but never contain the token: they end up in
// gRPC status details and logs, and a projected token is a bearer credential.
//
// The key sources live in jwt-key-sources.ts, the node:crypto fast path in jwt-fast-verify.ts.
import { decodeProtectedHeader, errors, jwtVerify, type JWSHeaderParameters, type JWTPayload } from "jose";
import { istioParts, parseSpiffeId, SpiffeIdError, workloadId, type SpiffeId } from "../pki/spiffe.js";
import {
  AuthenticationError,
  AuthenticatorUnavailableError,
  bearerToken,
  type AuthenticatedCaller,
  type Authenticator,
  type CallerCredentials,
} from "./authenticator.js";
import { redactSecrets } from "../log/redact.js";
import { decodeToken, fastVerify, type DecodedToken, type FastVerifyPolicy } from "./jwt-fast-verify.js";
import type { Log } from "../log/logger.js";
import {
  causeText,
  keySourceFor,
  KeySourceError,
  type JwksSource,
  type KeySource,
} from "./jwt-key-sources.js";

export type { JwksSource } from "./jwt-key-sources.js";

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
  /** `log.child({ component: "jwt" })` from the server's logger. */
  log?: Log;
  /** Verify with jose only, skipping the node:crypto fast path (tests compare the two). */
  joseOnly?: boolean;
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
  log: Log | undefined;
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
  private readonly fastPolicy: FastVerifyPolicy;
  /** Tokens accepted by the fast path / by jose (the fallback). */
  readonly verified = { fast: 0, jose: 0 };

  constructor(options: JwtAuthenticatorOptions) {
    this.opts = resolveOptions(options);
    this.joseOnly = options.joseOnly ?? false;
    this.source = keySourceFor(options.jwks, this.opts);
    this.fastPolicy = { ...this.opts, algorithms: this.algorithms };
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
    // Split and decoded once for the checks below and the fast path; a segment the strict
    // decoder refuses is decoded again the lenient way only to word the refusal.
    const decoded = decodeToken(token);
    if (!decoded)
      throw new AuthenticationError(
        `bearer token is not a signed JWT: expected 3 dot-separated parts, got ${token.split(".").length}`,
      );
    this.checkHeader(decoded.header ?? token);
    const unverified = decoded.payload ?? peekPayload(token);
    if (!unverified)
      throw new AuthenticationError("bearer token payload is not base64url-encoded JSON object");
    // Rejecting on unverified claims is safe (we only ever refuse), gives the precise
    // reason for another cluster's token, and spares a JWKS refetch for its unknown kid.
    this.checkIssuer(unverified.iss);
    this.checkForeignSpiffeId(unverified);

    const payload = await this.verifySignatureAndClaims(token, decoded);
    return this.identityFrom(payload);
  }

  /** `from`: the strictly decoded header, or the token when that failed (jose decodes it). */
  private checkHeader(from: Record<string, unknown> | string): void {
    let header: JWSHeaderParameters;
    try {
      header = (typeof from === "string" ? decodeProtectedHeader(from) : from) as JWSHeaderParameters;
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

  private async verifySignatureAndClaims(token: string, decoded: DecodedToken): Promise<JWTPayload> {
    const fast = this.joseOnly ? undefined : await fastVerify(decoded, this.fastPolicy, this.source);
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
  // The whole token, and each part long enough to be recognised on its own.
  const parts = token.split(".").filter((part) => part.length >= 16);
  const msg = redactSecrets(redactSecrets(err.message, [token], "<token>"), parts, "<redacted>");
  if (msg !== err.message) err.message = msg;
  return err;
}
