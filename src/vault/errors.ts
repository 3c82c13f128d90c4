// Vault failures turned into actions: every message names the Vault address or
// path, the cause, and the fix. `category` lets callers map to gRPC codes
// (unavailable -> UNAVAILABLE, permission_denied -> PERMISSION_DENIED,
// invalid_argument -> INVALID_ARGUMENT, not_found -> NOT_FOUND/INTERNAL).
// Messages never contain tokens, secret_ids, JWTs or keys: see redactSecrets().

export type VaultErrorCategory =
  "unavailable" | "permission_denied" | "invalid_argument" | "not_found" | "config";

export interface VaultErrorDetails {
  address: string;
  path?: string | undefined;
  method?: string | undefined;
  status?: number | undefined;
  /** Vault's own `errors[]`, verbatim (already redacted). */
  vaultErrors?: string[] | undefined;
  cause?: unknown;
}

export class VaultError extends Error {
  override readonly name: string = "VaultError";
  readonly category: VaultErrorCategory = "invalid_argument";
  /** True when the same request may succeed later without a config change. */
  readonly retryable: boolean = false;
  readonly address: string;
  readonly path: string | undefined;
  readonly method: string | undefined;
  readonly status: number | undefined;
  readonly vaultErrors: string[];

  constructor(message: string, details: VaultErrorDetails) {
    super(message, details.cause !== undefined ? { cause: details.cause } : undefined);
    this.address = details.address;
    this.path = details.path;
    this.method = details.method;
    this.status = details.status;
    this.vaultErrors = details.vaultErrors ?? [];
  }

  /** Callers should answer "try again later" (gRPC UNAVAILABLE). */
  get unavailable(): boolean {
    return this.category === "unavailable";
  }
  /** Callers should answer "not allowed / bad request" (PERMISSION_DENIED / INVALID_ARGUMENT). */
  get denied(): boolean {
    return this.category === "permission_denied" || this.category === "invalid_argument";
  }
}

/** Connection refused/reset, timeouts, 412, 429, 5xx: Vault cannot answer now. */
export class VaultUnavailableError extends VaultError {
  override readonly name: string = "VaultUnavailableError";
  override readonly category: VaultErrorCategory = "unavailable";
  override readonly retryable: boolean = true;
}

/** 503 "Vault is sealed". */
export class VaultSealedError extends VaultUnavailableError {
  override readonly name: string = "VaultSealedError";
}

/**
 * TLS verification failed (unknown CA, wrong host name, expired cert). Not
 * retryable: only a configuration change helps. Category "unavailable" because
 * for a workload the CA is unreachable, not refusing it.
 */
export class VaultTlsError extends VaultError {
  override readonly name: string = "VaultTlsError";
  override readonly category: VaultErrorCategory = "unavailable";
  readonly code: string;
  constructor(message: string, details: VaultErrorDetails & { code: string }) {
    super(message, details);
    this.code = details.code;
  }
}

/** 403 on a path: the token lacks a capability there (or the token is invalid). */
export class VaultPermissionDeniedError extends VaultError {
  override readonly name: string = "VaultPermissionDeniedError";
  override readonly category: VaultErrorCategory = "permission_denied";
  /** Capability the request needed, e.g. "update". */
  readonly requiredCapability: string;
  /** What `sys/capabilities-self` says the token has on the path (undefined if unknown). */
  readonly tokenCapabilities: string[] | undefined;
  /** The token itself was rejected (revoked, expired, wrong), not just this path. */
  readonly tokenInvalid: boolean;
  constructor(
    message: string,
    details: VaultErrorDetails & {
      requiredCapability: string;
      tokenCapabilities?: string[] | undefined;
      tokenInvalid?: boolean;
    },
  ) {
    super(message, details);
    this.requiredCapability = details.requiredCapability;
    this.tokenCapabilities = details.tokenCapabilities;
    this.tokenInvalid = details.tokenInvalid ?? false;
  }
}

/** 400 and other 4xx: Vault refused the request's content; its complaint is verbatim in the message. */
export class VaultBadRequestError extends VaultError {
  override readonly name: string = "VaultBadRequestError";
  override readonly category: VaultErrorCategory = "invalid_argument";
}

/** 404: nothing at the path (or the mount is missing). */
export class VaultNotFoundError extends VaultError {
  override readonly name: string = "VaultNotFoundError";
  override readonly category: VaultErrorCategory = "not_found";
}

/** A login at auth/<mount>/login failed; the message names the method, mount and what to check. */
export class VaultAuthError extends VaultError {
  override readonly name: string = "VaultAuthError";
  override readonly category: VaultErrorCategory = "permission_denied";
  override readonly retryable: boolean;
  constructor(message: string, details: VaultErrorDetails & { retryable?: boolean }) {
    super(message, details);
    this.retryable = details.retryable ?? false;
  }
}

/** Local configuration problem (missing file, bad reference, bad env). */
export class VaultConfigError extends VaultError {
  override readonly name: string = "VaultConfigError";
  override readonly category: VaultErrorCategory = "config";
}

/** Capability a request needs, for "which capability is missing" messages. */
export function capabilityFor(method: string, path: string, query?: string): string {
  const m = method.toUpperCase();
  if (m === "LIST" || (m === "GET" && /(^|&)list=true(&|$)/.test(query ?? ""))) return "list";
  if (m === "GET" || m === "HEAD") return "read";
  if (m === "DELETE") return "delete";
  if (m === "PATCH") return "patch";
  // POST/PUT: Vault checks "create" for a new key on paths with an existence
  // check (KV) and "update" otherwise (PKI sign, logins, sys/...). "update" is
  // what every meshvault write needs; KV writes of new keys need "create" too.
  return /\/data\//.test(path) ? "create/update" : "update";
}

const TLS_UNKNOWN_CA = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
]);
const TLS_OTHER = new Set([
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_SSL_WRONG_VERSION_NUMBER",
  "EPROTO",
]);
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "ERR_SOCKET_CONNECTION_TIMEOUT",
  "MESHVAULT_TIMEOUT",
]);

/** Turn a low-level transport error (no HTTP answer) into a VaultError. */
export function transportError(err: unknown, address: string, method: string, path: string): VaultError {
  const e = err as NodeJS.ErrnoException & { code?: string };
  const code = typeof e?.code === "string" ? e.code : "";
  const base = { address, path, method, cause: err };
  if (TLS_UNKNOWN_CA.has(code)) {
    return new VaultTlsError(
      `TLS to Vault at ${address} failed: the server certificate is signed by an unknown authority (${code}). ` +
        `Set VAULT_CACERT (or BAO_CACERT, or vault.caCert in the config file) to the PEM of the CA that signed Vault's certificate` +
        ` (VAULT_SKIP_VERIFY=true only for experiments).`,
      { ...base, code },
    );
  }
  if (TLS_OTHER.has(code)) {
    const fix =
      code === "ERR_TLS_CERT_ALTNAME_INVALID"
        ? `use the host name in Vault's certificate in VAULT_ADDR, or set VAULT_TLS_SERVER_NAME`
        : code === "ERR_SSL_WRONG_VERSION_NUMBER" || code === "EPROTO"
          ? `check the scheme in VAULT_ADDR (http:// vs https://)`
          : `renew Vault's certificate or fix the clock`;
    return new VaultTlsError(`TLS to Vault at ${address} failed (${code}: ${e.message}): ${fix}.`, {
      ...base,
      code,
    });
  }
  if (code === "ECONNREFUSED") {
    return new VaultUnavailableError(
      `cannot connect to Vault at ${address} (connection refused): is Vault running at ${address}? Check VAULT_ADDR.`,
      base,
    );
  }
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") {
    return new VaultUnavailableError(
      `cannot resolve the Vault host in ${address} (${code}): check VAULT_ADDR and DNS.`,
      base,
    );
  }
  if (code === "MESHVAULT_TIMEOUT" || code === "ETIMEDOUT") {
    return new VaultUnavailableError(
      `Vault at ${address} did not answer ${method} ${path} in time: is Vault overloaded or unreachable? Check VAULT_ADDR and the network.`,
      base,
    );
  }
  const what = code ? `${code}: ${e?.message ?? String(err)}` : (e?.message ?? String(err));
  return new VaultUnavailableError(
    `request to Vault at ${address} (${method} ${path}) failed (${what}): is Vault running and reachable? Check VAULT_ADDR.`,
    base,
  );
}

export function isConnectionErrorCode(code: string): boolean {
  return CONNECTION_CODES.has(code);
}

/** Secrets are scrubbed from Vault's messages with the one helper (see log/redact.ts). */
export { redactSecrets } from "../log/redact.js";
