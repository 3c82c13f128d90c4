// Where JWT verification keys come from: a JWKS file (re-read on change), a JWKS URL, or an
// OIDC issuer's discovery document. Source failures are KeySourceError, so the authenticator
// can tell "cannot verify right now" (retryable) from "bad token".
import { stat, readFile } from "node:fs/promises";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  type CryptoKey,
  type JSONWebKeySet,
  type JWSHeaderParameters,
  type FlattenedJWSInput,
} from "jose";
import type { Log } from "../log/logger.js";

export type JwksSource = { file: string } | { url: string } | { oidcIssuer: string };

/** What the key sources need from the authenticator's options (all defaults resolved). */
export interface KeySourceOptions {
  fileCheckIntervalMs: number;
  remoteCooldownMs: number;
  remoteMaxAgeMs: number;
  fetchTimeoutMs: number;
  log: Log | undefined;
}

export type KeyResolver = (header: JWSHeaderParameters, token: FlattenedJWSInput) => Promise<CryptoKey>;

/** Thrown inside key resolution when the key source itself failed (not the token). */
export class KeySourceError extends Error {
  override name = "KeySourceError";
}

/** A place keys come from; `resolver()` may fail with KeySourceError. */
export interface KeySource {
  readonly description: string;
  resolver(): Promise<KeyResolver>;
  /** Called after a kid miss or a bad signature: true when fresh keys may now verify it. */
  refresh(): Promise<boolean>;
  /** Loads or fetches the keys now (startup check); throws KeySourceError. */
  warm(): Promise<void>;
}

export function causeText(err: unknown): string {
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
    private readonly log: Log | undefined,
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
    this.log?.info(
      { jwksFile: this.path, keys: next.jwks().keys.length },
      first ? "loaded the JWKS file" : "reloaded the JWKS file",
    );
    return true;
  }

  private failed(reason: string): boolean {
    // Keep serving with the last good key set: a half-written file must not lock every workload out.
    if (this.keys) {
      this.log?.warn(
        { jwksFile: this.path, reason },
        "cannot reload the JWKS file; keeping the previously loaded keys",
      );
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
function remoteKeys(url: URL, o: KeySourceOptions): Remote {
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

  constructor(url: string, opts: KeySourceOptions) {
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
    private readonly opts: KeySourceOptions,
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
      this.opts.log?.info({ issuer: this.issuer, jwksUri: jwksUri.href }, "OIDC discovery found the JWKS");
      this.remote = remoteKeys(jwksUri, this.opts);
      return this.remote;
    } catch (err) {
      this.lastFailure = Date.now();
      this.lastError = `OIDC discovery at ${url} failed: ${causeText(err)}`;
      throw new KeySourceError(this.lastError);
    }
  }
}

export function keySourceFor(jwks: JwksSource, opts: KeySourceOptions): KeySource {
  if ("file" in jwks) return new FileKeySource(jwks.file, opts.fileCheckIntervalMs, opts.log);
  if ("url" in jwks) return new UrlKeySource(jwks.url, opts);
  if ("oidcIssuer" in jwks) return new OidcKeySource(jwks.oidcIssuer, opts);
  throw new Error("JWT authenticator: jwks needs one of file, url or oidcIssuer");
}
