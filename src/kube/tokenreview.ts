// Kubernetes TokenReview caller authentication, as istiod's: the CA asks the API
// server whether the caller's bearer token is a valid service-account token for
// our audience, and issues `spiffe://<td>/ns/<ns>/sa/<sa>` for the answer.
//
// Unlike offline JWT verification this notices deleted service accounts and pods
// (bound tokens). Positive answers are cached (bounded LRU, until the token's own
// `exp`, capped by cacheMaxAgeSeconds) so a burst of pods starting does not turn
// into a burst of TokenReviews; concurrent calls with the same token share one
// review. The token never appears in a message or a log line.
import { createHash } from "node:crypto";
import { AuthenticationV1Api, type KubeConfig, type V1TokenReview } from "@kubernetes/client-node";
import { SpiffeIdError, workloadId } from "../pki/spiffe.js";
import {
  AuthenticationError,
  AuthenticatorUnavailableError,
  bearerToken,
  type AuthenticatedCaller,
  type Authenticator,
  type CallerCredentials,
} from "../identity/authenticator.js";
import { describeKubeError, forbiddenHint, serverOf, statusOf } from "./client.js";
import { ExpiringLru } from "./lru.js";

/** Istio's default cluster ID (ISTIO_META_CLUSTER_ID / values.global.multiCluster.clusterName). */
export const DEFAULT_CLUSTER_ID = "Kubernetes";
export const DEFAULT_TOKEN_AUDIENCES = ["istio-ca"];
export const SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts";

export interface TokenReviewAuthenticatorOptions {
  kubeConfig: KubeConfig;
  trustDomain: string;
  /** Audiences the token must be valid for (default ["istio-ca"], what istio-agent requests). */
  audiences?: string[];
  /** The cluster this CA serves; a caller's `clusterid` header naming another is refused. */
  clusterId?: string;
  /** Most cached positive reviews (default 10000). */
  cacheSize?: number;
  /**
   * Longest a positive review is reused, in seconds (default 300). The token's own
   * exp bounds it too; the cap bounds how long a deleted pod or service account
   * keeps getting certificates from the cache.
   */
  cacheMaxAgeSeconds?: number;
  /** TokenReview request timeout (default 5000 ms). */
  timeoutMs?: number;
  now?: () => number;
}

const SA_USERNAME = /^system:serviceaccount:([^:]+):([^:]+)$/;

/** `exp` of a JWT, read without verifying anything: used only to bound how long we cache. */
export function unverifiedExpiry(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const payload: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
    const exp = (payload as { exp?: unknown } | null)?.exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

function scrub(text: string, token: string): string {
  return token.length >= 8 ? text.split(token).join("[token]") : text;
}

export class TokenReviewAuthenticator implements Authenticator {
  readonly name = "tokenreview";
  private readonly api: AuthenticationV1Api;
  private readonly server: string;
  private readonly audiences: string[];
  private readonly clusterId: string;
  private readonly cache: ExpiringLru<AuthenticatedCaller>;
  private readonly inflight = new Map<string, Promise<AuthenticatedCaller>>();
  private readonly maxAgeMs: number;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  /** TokenReview calls made (for tests and metrics). */
  reviews = 0;

  constructor(private readonly opts: TokenReviewAuthenticatorOptions) {
    this.api = opts.kubeConfig.makeApiClient(AuthenticationV1Api);
    this.server = serverOf(opts.kubeConfig);
    this.audiences = opts.audiences?.length ? opts.audiences : DEFAULT_TOKEN_AUDIENCES;
    this.clusterId = opts.clusterId ?? DEFAULT_CLUSTER_ID;
    this.now = opts.now ?? Date.now;
    this.cache = new ExpiringLru(opts.cacheSize ?? 10_000, this.now);
    this.maxAgeMs = (opts.cacheMaxAgeSeconds ?? 300) * 1000;
    this.timeoutMs = opts.timeoutMs ?? 5000;
  }

  async authenticate(creds: CallerCredentials): Promise<AuthenticatedCaller | undefined> {
    const token = bearerToken(creds);
    if (token === undefined) return undefined;

    // As istiod: an agent configured for another cluster must not get identities here,
    // even with a token this API server accepts (e.g. a shared issuer).
    const claimed = creds.clusterId?.trim();
    if (claimed && claimed !== this.clusterId)
      throw new AuthenticationError(
        `client claims to be in cluster "${claimed}", but this CA serves cluster "${this.clusterId}": set the workload's ISTIO_META_CLUSTER_ID (values.global.multiCluster.clusterName) to "${this.clusterId}", or kubernetes.clusterId to "${claimed}" if this CA serves that cluster`,
      );

    const key = createHash("sha256").update(token).digest("base64url");
    const cached = this.cache.get(key);
    if (cached) return cached;
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = this.review(token, key).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  private async review(token: string, key: string): Promise<AuthenticatedCaller> {
    this.reviews++;
    let res: V1TokenReview;
    let timer: NodeJS.Timeout | undefined;
    try {
      const call = this.api.createTokenReview({
        body: {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          spec: { token, audiences: this.audiences },
        },
      });
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      });
      res = await Promise.race([call, timeout]);
    } catch (err) {
      // Our own call failed: the caller may well be valid, so it should retry (UNAVAILABLE).
      const status = statusOf(err);
      const hint =
        status === 401
          ? "; meshvault's own Kubernetes credentials were refused: check its service-account token or kubeconfig"
          : status === 403
            ? `; ${forbiddenHint("create", "tokenreviews.authentication.k8s.io")}`
            : "; check that the API server is reachable from meshvault";
      throw new AuthenticatorUnavailableError(
        scrub(`TokenReview at ${this.server} failed: ${describeKubeError(err)}${hint}`, token),
      );
    } finally {
      clearTimeout(timer);
    }
    const caller = this.callerFrom(res, token);
    const exp = unverifiedExpiry(token);
    const now = this.now();
    this.cache.set(key, caller, Math.min(exp ?? Infinity, now + this.maxAgeMs));
    return caller;
  }

  private callerFrom(res: V1TokenReview, token: string): AuthenticatedCaller {
    const s = res.status;
    if (!s?.authenticated) {
      const why = s?.error ? scrub(s.error, token) : "not authenticated";
      throw new AuthenticationError(
        `Kubernetes rejected the token (audiences ${JSON.stringify(this.audiences)}): ${why}`,
      );
    }
    // The API server answers with the audiences the token is valid for among those asked;
    // an empty intersection would mean it ignored ours.
    if (s.audiences && s.audiences.length > 0 && !s.audiences.some((a) => this.audiences.includes(a)))
      throw new AuthenticationError(
        `token is valid for audiences ${JSON.stringify(s.audiences)}, none of ${JSON.stringify(this.audiences)}`,
      );
    const username = s.user?.username ?? "";
    const groups = s.user?.groups ?? [];
    const m = SA_USERNAME.exec(username);
    if (!m || !groups.includes(SERVICE_ACCOUNTS_GROUP))
      throw new AuthenticationError(
        `token belongs to ${JSON.stringify(username)}, not a service account (system:serviceaccount:<ns>:<sa> in group ${SERVICE_ACCOUNTS_GROUP}); only service accounts get workload identities`,
      );
    const [, namespace, serviceAccount] = m as unknown as [string, string, string];
    try {
      return {
        identity: workloadId(this.opts.trustDomain, namespace, serviceAccount),
        method: this.name,
        namespace,
        serviceAccount,
      };
    } catch (err) {
      if (err instanceof SpiffeIdError)
        throw new AuthenticationError(
          `service account ${namespace}/${serviceAccount} does not make a valid SPIFFE ID: ${err.message}`,
        );
      throw err;
    }
  }
}
