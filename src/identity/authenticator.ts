// Caller authentication for the CA API: each authenticator looks at one kind of
// credential; the server tries them in order and the first that succeeds wins.
import type { SpiffeId } from "../pki/spiffe.js";

/** What the server knows about a call before it is authenticated. */
export interface CallerCredentials {
  /** The `authorization` header value(s), if any (`Bearer <jwt>`). */
  authorization?: string;
  /** `clusterid` header, if the caller sent one. */
  clusterId?: string;
  /** DER certificates the client presented over mTLS, leaf first (empty if none). */
  peerCertificates: Uint8Array[];
}

export interface AuthenticatedCaller {
  identity: SpiffeId;
  /** Which authenticator accepted the caller (`jwt`, `client-cert`, `tokenreview`). */
  method: string;
  /** Kubernetes namespace/service account when known (used for trusted node accounts). */
  namespace?: string;
  serviceAccount?: string;
}

/**
 * `undefined` means "this credential is not mine, try the next authenticator";
 * throwing AuthenticationError means "the credential is mine and it is bad".
 */
export interface Authenticator {
  readonly name: string;
  authenticate(creds: CallerCredentials): Promise<AuthenticatedCaller | undefined>;
}

/** The caller's credential was present but invalid: answered UNAUTHENTICATED. */
export class AuthenticationError extends Error {
  override name = "AuthenticationError";
}

/** The authenticator's own dependency (JWKS URL, kube API) failed: answered UNAVAILABLE. */
export class AuthenticatorUnavailableError extends Error {
  override name = "AuthenticatorUnavailableError";
}

/**
 * The token of a `Bearer <token>` authorization header: undefined when there is no header or
 * it names another scheme (not this authenticator's credential); AuthenticationError when it
 * says Bearer but carries no token.
 */
export function bearerToken(creds: CallerCredentials): string | undefined {
  const header = creds.authorization?.trim();
  if (!header) return undefined;
  const m = header.match(/^(\S+)(?:\s+(.*))?$/s);
  if (!m || m[1]!.toLowerCase() !== "bearer") return undefined;
  const token = (m[2] ?? "").trim();
  if (token === "") throw new AuthenticationError("authorization header says Bearer but carries no token");
  return token;
}
