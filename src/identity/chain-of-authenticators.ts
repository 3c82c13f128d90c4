// Tries authenticators in order; the first that accepts the caller wins. Istiod
// tries the client certificate before the JWT, and so does the default order.
import {
  AuthenticationError,
  AuthenticatorUnavailableError,
  type AuthenticatedCaller,
  type Authenticator,
  type CallerCredentials,
} from "./authenticator.js";

export const NO_CREDENTIALS_MESSAGE =
  "no credentials: send `authorization: Bearer <service-account token>` (audience istio-ca) or a client certificate";

/**
 * Returns the first authenticator's success. A failure from one does not stop a
 * later one from succeeding (a workload with an expired cert but a good token is
 * fine). When none succeeds:
 * - nobody recognised the credentials -> AuthenticationError(NO_CREDENTIALS_MESSAGE);
 * - any authenticator was unavailable -> AuthenticatorUnavailableError (the caller
 *   may well be valid, so it should retry), with every reason;
 * - otherwise AuthenticationError with every authenticator's reason.
 * Unexpected errors (bugs) are rethrown after the others had their turn.
 */
export async function authenticateCaller(
  authenticators: readonly Authenticator[],
  creds: CallerCredentials,
): Promise<AuthenticatedCaller> {
  const reasons: string[] = [];
  let unavailable = false;
  let unexpected: unknown;
  for (const a of authenticators) {
    try {
      const caller = await a.authenticate(creds);
      if (caller) return caller;
    } catch (err) {
      if (err instanceof AuthenticatorUnavailableError) unavailable = true;
      else if (!(err instanceof AuthenticationError)) {
        unexpected ??= err;
        continue;
      }
      reasons.push(`${a.name}: ${err.message}`);
    }
  }
  if (unexpected !== undefined) throw unexpected;
  if (reasons.length === 0) throw new AuthenticationError(NO_CREDENTIALS_MESSAGE);
  const message = reasons.length === 1 ? reasons[0]! : `caller authentication failed: ${reasons.join("; ")}`;
  throw unavailable ? new AuthenticatorUnavailableError(message) : new AuthenticationError(message);
}
