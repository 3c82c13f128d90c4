// The Vault HTTP client: one keep-alive agent per Vault, JSON in and out,
// retries with exponential backoff and full jitter, errors turned into actions.
//
// Retry policy (per request, `maxAttempts` total, default 4):
// - retried: connection errors and timeouts, 412 (eventual consistency on
//   replicated Vault), 429 (rate-limit quota; Retry-After honoured), 500, 502,
//   503 and 504. A sealed Vault (503 "Vault is sealed") is retried too, since a
//   seal is often a short maintenance or an HA failover, but the final error is
//   a VaultSealedError that says so.
// - not retried: TLS verification failures (only a config change helps), 400,
//   403, 404 and other 4xx.
// Writes are retried as well: every meshvault write to Vault (sign, login,
// renew) is safe to repeat, at worst it issues one extra certificate or token.
//
// 403 handling: the client asks `sys/capabilities-self` what the token can do
// on the path. If even that is refused, the token itself is invalid (revoked or
// expired): a TokenSource that can log in again is told, and the request is
// repeated once with a fresh token.

import { readdirSync, readFileSync, statSync } from "node:fs";
import {
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { join } from "node:path";
import type { VaultConnection } from "./config.js";
import { backoffDelay } from "../timing/backoff.js";
import { abortable, abortError, sleep } from "../timing/clock.js";
import {
  VaultBadRequestError,
  VaultConfigError,
  VaultError,
  VaultNotFoundError,
  VaultPermissionDeniedError,
  VaultSealedError,
  VaultUnavailableError,
  capabilityFor,
  redactSecrets,
  transportError,
} from "./errors.js";
import { fsReason } from "../fs/errors.js";
import type { Log } from "../log/logger.js";

/** The `auth` block of a login / token response. */
export interface VaultAuthBlock {
  client_token: string;
  accessor?: string;
  policies?: string[] | null;
  token_policies?: string[] | null;
  metadata?: Record<string, string> | null;
  lease_duration: number;
  renewable: boolean;
  entity_id?: string;
  token_type?: string;
  orphan?: boolean;
}

/** Vault's JSON envelope. */
export interface VaultResponse<D = Record<string, unknown>> {
  request_id?: string;
  lease_id?: string;
  renewable?: boolean;
  lease_duration?: number;
  data?: D | null;
  auth?: VaultAuthBlock | null;
  warnings?: string[] | null;
  wrap_info?: unknown;
}

/** Supplies the token for requests; implemented by VaultTokenManager. */
export interface TokenSource {
  token(): Promise<string>;
  /**
   * Vault rejected `token` as invalid/expired. Return true when a fresh token
   * can be obtained (the request is then repeated once), false otherwise.
   */
  invalidate(token: string): boolean | Promise<boolean>;
  /** Strings that must never appear in messages (current token and login secrets). */
  secrets?(): Iterable<string>;
}

export interface RetryPolicy {
  /** Attempts including the first. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 4, baseDelayMs: 100, maxDelayMs: 5_000 };
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface VaultClientOptions {
  /** Static token (used when no tokenSource); the `token` auth method's usual source. */
  token?: string | undefined;
  tokenSource?: TokenSource | undefined;
  retry?: Partial<RetryPolicy> | undefined;
  timeoutMs?: number | undefined;
  /** `log.child({ component: "vault" })` from the server's logger. */
  logger?: Log | undefined;
  /** Max sockets to Vault (keep-alive pool). Default 64. */
  maxSockets?: number | undefined;
  /** Injected for tests of the backoff arithmetic. */
  random?: () => number;
}

export interface RequestOptions {
  /** Use this token instead of the client's (e.g. a workload's own Vault token). */
  token?: string | undefined;
  /** Send no token (logins, sys/health, unauthenticated PKI reads). */
  noAuth?: boolean | undefined;
  /** Override the attempt count for this request (1 = no retry). */
  maxAttempts?: number | undefined;
  /** Extra values to scrub from any error message. */
  secrets?: Iterable<string> | undefined;
  /** HTTP statuses to return instead of throwing (e.g. sys/health's 429/503). */
  acceptStatus?: readonly number[] | undefined;
  /** Per-request X-Vault-Namespace (default: the connection's). */
  namespace?: string | undefined;
  /**
   * Cancels the request and any retry wait (as vault-client-go takes a context): the call
   * rejects with the signal's reason (an AbortError), never retried.
   */
  signal?: AbortSignal | undefined;
}

export interface RawResponse {
  status: number;
  headers: IncomingMessage["headers"];
  body: string;
}

/** Request body keys whose values are secrets, scrubbed from every message. */
const SECRET_BODY_KEYS = new Set([
  "secret_id",
  "jwt",
  "token",
  "client_token",
  "private_key",
  "password",
  "pem_bundle",
  "key",
]);

type ConnectionLike = Pick<
  VaultConnection,
  "address" | "caCert" | "caPath" | "clientCert" | "clientKey" | "tlsServerName" | "namespace" | "skipVerify"
> &
  Partial<Pick<VaultConnection, "timeoutMs" | "maxAttempts">>;

export class VaultClient {
  readonly address: string;
  readonly namespace: string | undefined;
  private readonly url: URL;
  private readonly agent: HttpAgent | HttpsAgent;
  private readonly retry: RetryPolicy;
  private readonly timeoutMs: number;
  private readonly logger: Log | undefined;
  private readonly random: () => number;
  private tokenSource: TokenSource | undefined;
  private staticToken: string | undefined;
  private closed = false;

  constructor(connection: ConnectionLike, options: VaultClientOptions = {}) {
    this.address = connection.address.replace(/\/+$/, "");
    this.namespace = connection.namespace;
    try {
      this.url = new URL(this.address);
    } catch {
      throw new VaultConfigError(
        `Vault address ${JSON.stringify(connection.address)} is not a URL: set VAULT_ADDR like https://vault.example:8200`,
        { address: connection.address },
      );
    }
    this.retry = {
      ...DEFAULT_RETRY,
      ...(connection.maxAttempts !== undefined ? { maxAttempts: connection.maxAttempts } : {}),
      ...definedOnly(options.retry ?? {}),
    };
    this.timeoutMs = options.timeoutMs ?? connection.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.logger = options.logger;
    this.random = options.random ?? Math.random;
    this.tokenSource = options.tokenSource;
    this.staticToken = options.token;
    const common = { keepAlive: true, maxSockets: options.maxSockets ?? 64 };
    if (this.url.protocol === "https:") {
      this.agent = new HttpsAgent({
        ...common,
        ca: loadCa(connection),
        rejectUnauthorized: !connection.skipVerify,
        ...(connection.tlsServerName ? { servername: connection.tlsServerName } : {}),
        ...(connection.clientCert
          ? { cert: readConfigFile("VAULT_CLIENT_CERT", connection.clientCert, this.address) }
          : {}),
        ...(connection.clientKey
          ? { key: readConfigFile("VAULT_CLIENT_KEY", connection.clientKey, this.address) }
          : {}),
      });
    } else if (this.url.protocol === "http:") {
      this.agent = new HttpAgent(common);
    } else {
      throw new VaultConfigError(
        `Vault address ${this.address} must start with http:// or https://: fix VAULT_ADDR`,
        { address: this.address },
      );
    }
  }

  /** Install the token source (VaultTokenManager) after construction. */
  useTokenSource(source: TokenSource | undefined): void {
    this.tokenSource = source;
  }
  /** Use a fixed token (token auth). */
  useToken(token: string | undefined): void {
    this.staticToken = token;
  }

  read<D = Record<string, unknown>>(path: string, opts?: RequestOptions): Promise<VaultResponse<D> | null> {
    // Like the vault CLI: nothing at the path is null, not an error.
    return this.request<D>("GET", path, undefined, opts).catch((e: unknown) => {
      if (e instanceof VaultNotFoundError) return null;
      throw e;
    });
  }
  write<D = Record<string, unknown>>(
    path: string,
    body: Record<string, unknown> = {},
    opts?: RequestOptions,
  ): Promise<VaultResponse<D> | null> {
    return this.request<D>("POST", path, body, opts);
  }
  /** LIST as `GET ?list=true`; returns the keys (empty when nothing is there). */
  async list(path: string, opts?: RequestOptions): Promise<string[]> {
    const r = await this.request<{ keys?: string[] }>(
      "GET",
      `${stripSlashes(path)}?list=true`,
      undefined,
      opts,
    ).catch((e: unknown) => {
      if (e instanceof VaultNotFoundError) return null;
      throw e;
    });
    return r?.data?.keys ?? [];
  }
  delete(path: string, opts?: RequestOptions): Promise<VaultResponse | null> {
    return this.request("DELETE", path, undefined, opts);
  }

  /** Any call; returns Vault's parsed JSON (null for 204 / empty body). */
  async request<D = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    opts: RequestOptions = {},
  ): Promise<VaultResponse<D> | null> {
    const raw = await this.requestRaw(method, path, body, opts);
    if (raw.status === 204 || raw.body.trim() === "") return null;
    try {
      return JSON.parse(raw.body) as VaultResponse<D>;
    } catch {
      throw new VaultError(
        `Vault at ${this.address} answered ${method} ${cleanPath(path)} with HTTP ${raw.status} but not JSON: ` +
          `is VAULT_ADDR pointing at Vault (and not a proxy or UI)?`,
        { address: this.address, path: cleanPath(path), method, status: raw.status },
      );
    }
  }

  /** Any call, body returned as text (for PEM endpoints such as `<pki>/ca/pem`). */
  async requestRaw(
    method: string,
    path: string,
    body?: unknown,
    opts: RequestOptions = {},
  ): Promise<RawResponse> {
    const p = cleanPath(path);
    const explicitToken = opts.token;
    let token: string | undefined;
    if (!opts.noAuth) {
      // A login shared with other callers cannot take this request's signal; stop waiting for it.
      token =
        explicitToken ??
        (this.tokenSource ? await abortable(this.tokenSource.token(), opts.signal) : this.staticToken);
    }
    const secrets = this.secretsFor(token, body, opts.secrets);
    try {
      return await this.attempts(method, p, body, token, opts, secrets);
    } catch (e) {
      // The token itself was rejected: log in again and repeat once.
      if (
        e instanceof VaultPermissionDeniedError &&
        e.tokenInvalid &&
        token !== undefined &&
        explicitToken === undefined &&
        this.tokenSource &&
        (await this.tokenSource.invalidate(token))
      ) {
        const fresh = await abortable(this.tokenSource.token(), opts.signal);
        this.logger?.warn({ method, path: p }, "Vault rejected the token; logged in again and retrying once");
        return this.attempts(method, p, body, fresh, opts, this.secretsFor(fresh, body, opts.secrets));
      }
      throw e;
    }
  }

  /**
   * Ends every connection, in use or idle: a request in flight fails at once (an AbortError,
   * not retried) instead of waiting out the timeout of a Vault that does not answer, and no
   * request is sent afterwards.
   */
  close(): void {
    this.closed = true;
    this.agent.destroy();
  }

  private closedError(): Error {
    return new DOMException(`the connection to Vault at ${this.address} was closed`, "AbortError");
  }

  /** Capabilities `token` has on `path` (sys/capabilities-self); undefined if the token cannot ask. */
  async capabilitiesSelf(path: string, token?: string, signal?: AbortSignal): Promise<string[] | undefined> {
    const t =
      token ?? (this.tokenSource ? await abortable(this.tokenSource.token(), signal) : this.staticToken);
    const raw = await this.send("POST", "sys/capabilities-self", { paths: [path] }, t, undefined, signal);
    if (raw.status !== 200) return undefined;
    const parsed = JSON.parse(raw.body) as VaultResponse<Record<string, string[]>> & Record<string, unknown>;
    const caps =
      parsed.data?.[path] ?? (parsed[path] as string[] | undefined) ?? parsed.data?.["capabilities"];
    return Array.isArray(caps) ? caps : undefined;
  }

  private secretsFor(
    token: string | undefined,
    body: unknown,
    extra: Iterable<string> | undefined,
  ): string[] {
    const out: string[] = [];
    if (token) out.push(token);
    if (this.staticToken) out.push(this.staticToken);
    if (this.tokenSource?.secrets) out.push(...this.tokenSource.secrets());
    if (extra) out.push(...extra);
    if (body && typeof body === "object") {
      for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
        if (SECRET_BODY_KEYS.has(k) && typeof v === "string") out.push(v);
      }
    }
    return out;
  }

  private async attempts(
    method: string,
    path: string,
    body: unknown,
    token: string | undefined,
    opts: RequestOptions,
    secrets: string[],
  ): Promise<RawResponse> {
    const max = Math.max(1, opts.maxAttempts ?? this.retry.maxAttempts);
    for (let attempt = 1; ; attempt++) {
      let err: VaultError;
      let retryAfterMs: number | undefined;
      if (opts.signal?.aborted) throw abortError(opts.signal);
      if (this.closed) throw this.closedError();
      try {
        const raw = await this.send(method, path, body, token, opts.namespace, opts.signal);
        if ((raw.status >= 200 && raw.status < 300) || opts.acceptStatus?.includes(raw.status)) return raw;
        err = await this.httpError(method, path, raw, token, opts, secrets);
        retryAfterMs = parseRetryAfter(raw.headers["retry-after"]);
      } catch (e) {
        if (opts.signal?.aborted) throw abortError(opts.signal);
        if (this.closed) throw this.closedError();
        err = e instanceof VaultError ? e : transportError(e, this.address, method, path);
      }
      if (!err.retryable || attempt >= max) {
        if (err.retryable && max > 1) {
          // Say that we did try, so "connection refused" is not read as a one-off.
          err.message = `${err.message} (gave up after ${attempt} attempts)`;
        }
        throw err;
      }
      const delay = retryAfterMs ?? this.backoffMs(attempt);
      this.logger?.debug(
        { method, path, attempt, of: max, status: err.status ?? "no response", retryInMs: delay },
        "Vault request failed; retrying",
      );
      await sleep(delay, opts.signal);
    }
  }

  /** Full jitter: uniform in [0, min(max, base * 2^(attempt-1))]. */
  backoffMs(attempt: number): number {
    return backoffDelay(
      attempt,
      { initialMs: this.retry.baseDelayMs, maxMs: this.retry.maxDelayMs, jitter: 1 },
      this.random(),
    );
  }

  private async httpError(
    method: string,
    path: string,
    raw: RawResponse,
    token: string | undefined,
    opts: RequestOptions,
    secrets: string[],
  ): Promise<VaultError> {
    const vaultErrors = parseErrors(raw.body).map((m) => redactSecrets(m, secrets));
    const said = vaultErrors.length ? vaultErrors.join("; ") : `HTTP ${raw.status}`;
    const d = { address: this.address, path, method, status: raw.status, vaultErrors };
    const s = raw.status;
    if (s === 503 && vaultErrors.some((m) => /sealed/i.test(m))) {
      return new VaultSealedError(
        `Vault at ${this.address} is sealed: unseal it (bao operator unseal / vault operator unseal), then meshvault recovers by itself.`,
        d,
      );
    }
    // A KV mount just enabled as (or upgraded to) version 2 answers 400 until its upgrade
    // finishes, usually within a second: transient, so retried like a 503.
    if (s === 400 && vaultErrors.some((m) => /upgrading from non-versioned to versioned/i.test(m))) {
      return new VaultUnavailableError(
        `Vault at ${this.address} could not serve ${method} ${path} yet: ${said} (the KV mount is upgrading to version 2; retry in a few seconds).`,
        d,
      );
    }
    if (s === 412 || s === 429 || s >= 500) {
      const why =
        s === 429
          ? "rate limited (a Vault rate-limit quota), retry later or raise the quota"
          : s === 412
            ? "a replica has not caught up yet (412), retry"
            : `Vault answered ${s}: check Vault's logs`;
      return new VaultUnavailableError(
        `Vault at ${this.address} could not serve ${method} ${path}: ${said} (${why}).`,
        d,
      );
    }
    if (s === 403) return this.permissionError(method, path, token, opts, d, said);
    if (s === 404) {
      return new VaultNotFoundError(
        `nothing at ${path} on Vault at ${this.address} (404${vaultErrors.length ? `: ${said}` : ""}): ` +
          `check the path and that the secrets engine or auth method is mounted there (vault secrets list / vault auth list).`,
        d,
      );
    }
    return new VaultBadRequestError(`Vault at ${this.address} refused ${method} ${path}: ${said}`, d);
  }

  private async permissionError(
    method: string,
    path: string,
    token: string | undefined,
    opts: RequestOptions,
    d: { address: string; path: string; method: string; status: number; vaultErrors: string[] },
    said: string,
  ): Promise<VaultError> {
    const [p, query] = path.split("?", 2) as [string, string | undefined];
    const needed = capabilityFor(method, p, query);
    if (opts.noAuth || token === undefined) {
      return new VaultPermissionDeniedError(
        `Vault at ${this.address} denied ${method} ${p} without a token (${said}): configure a token or an auth method.`,
        { ...d, requiredCapability: needed },
      );
    }
    let caps: string[] | undefined;
    try {
      caps = await this.capabilitiesSelf(p, token);
    } catch {
      caps = undefined;
    }
    if (caps === undefined) {
      return new VaultPermissionDeniedError(
        `Vault at ${this.address} rejected the token on ${method} ${p} (${said}), and the token cannot even query ` +
          `sys/capabilities-self: it is expired, revoked or wrong. Log in again or provide a valid token (VAULT_TOKEN / the auth method).`,
        { ...d, requiredCapability: needed, tokenInvalid: true },
      );
    }
    const hcl = `path "${p}" { capabilities = [${needed
      .split("/")
      .map((c) => `"${c}"`)
      .join(", ")}] }`;
    return new VaultPermissionDeniedError(
      `permission denied on Vault at ${this.address}: ${method} ${p} needs the "${needed}" capability on "${p}", ` +
        `but the token has [${caps.join(", ")}] there. Add to one of the token's policies: ${hcl}`,
      { ...d, requiredCapability: needed, tokenCapabilities: caps },
    );
  }

  /** One HTTP exchange. Throws only transport errors (as VaultError). */
  private send(
    method: string,
    path: string,
    body: unknown,
    token: string | undefined,
    namespace: string | undefined,
    signal?: AbortSignal,
  ): Promise<RawResponse> {
    const url = new URL(`${this.url.pathname.replace(/\/+$/, "")}/v1/${path}`, this.url);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: OutgoingHttpHeaders = { Accept: "application/json" };
    if (token) headers["X-Vault-Token"] = token;
    const ns = namespace ?? this.namespace;
    if (ns) headers["X-Vault-Namespace"] = ns;
    if (payload) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = payload.length;
    }
    const doRequest = url.protocol === "https:" ? httpsRequest : httpRequest;
    return new Promise<RawResponse>((resolve0, reject0) => {
      // The request's own signal handling ends the socket; this settles the promise even
      // when the abort lands mid-response (no "end" then). A loop's signal serves many
      // requests, so the listener is removed once this one settles.
      const onAbort = (): void => reject0(abortError(signal!));
      signal?.addEventListener("abort", onAbort, { once: true });
      const done = (): void => signal?.removeEventListener("abort", onAbort);
      const resolve = (r: RawResponse): void => (done(), resolve0(r));
      const reject = (e: unknown): void => (done(), reject0(e));
      const req = doRequest(url, { method, headers, agent: this.agent, signal }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
        res.on("error", (e) => reject(transportError(e, this.address, method, path)));
      });
      req.setTimeout(this.timeoutMs, () => {
        const e = Object.assign(new Error(`no answer within ${this.timeoutMs} ms`), {
          code: "MESHVAULT_TIMEOUT",
        });
        req.destroy(e);
      });
      req.on("error", (e) => reject(transportError(e, this.address, method, path)));
      req.end(payload);
    });
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function stripSlashes(p: string): string {
  return p.replace(/^\/+/, "").replace(/\/+$/, "");
}

/** "v1/secret/data/x", "/secret/data/x" -> "secret/data/x". */
export function cleanPath(path: string): string {
  return stripSlashes(path).replace(/^v1\//, "");
}

function parseErrors(body: string): string[] {
  try {
    const j = JSON.parse(body) as { errors?: unknown };
    if (Array.isArray(j.errors)) {
      // Vault wraps some errors as "1 error occurred:\n\t* permission denied\n\n".
      return j.errors.map((m) =>
        String(m)
          .replace(/^\d+ errors? occurred:\s*/, "")
          .replace(/\s*\n\t\* /g, " ")
          .replace(/^\* /, "")
          .trim(),
      );
    }
  } catch {
    /* not JSON */
  }
  const t = body.trim();
  return t ? [t.slice(0, 500)] : [];
}

function parseRetryAfter(v: string | string[] | undefined): number | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  if (!s) return undefined;
  const n = Number(s);
  // Cap: a server asking for minutes would stall a CSR; the attempt budget decides.
  return Number.isFinite(n) && n >= 0 ? Math.min(n * 1000, 10_000) : undefined;
}

function readConfigFile(what: string, file: string, address: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new VaultConfigError(`${what}=${file} cannot be read (${fsReason(e)}): fix the path`, {
      address,
      cause: e,
    });
  }
}

/** CA bundle from caCert (a PEM file) and caPath (a directory of PEM files); undefined = system roots. */
function loadCa(c: ConnectionLike): Buffer[] | undefined {
  const out: Buffer[] = [];
  if (c.caCert) out.push(readConfigFile("VAULT_CACERT", c.caCert, c.address));
  if (c.caPath) {
    let names: string[];
    try {
      names = readdirSync(c.caPath);
    } catch (e) {
      throw new VaultConfigError(`VAULT_CAPATH=${c.caPath} cannot be listed (${fsReason(e)}): fix the path`, {
        address: c.address,
        cause: e,
      });
    }
    for (const n of names.sort()) {
      const f = join(c.caPath, n);
      if (statSync(f).isFile() && /-----BEGIN CERTIFICATE-----/.test(readFileSync(f, "utf8")))
        out.push(readFileSync(f));
    }
    if (out.length === 0) {
      throw new VaultConfigError(`VAULT_CAPATH=${c.caPath} holds no PEM certificates`, {
        address: c.address,
      });
    }
  }
  return out.length ? out : undefined;
}
