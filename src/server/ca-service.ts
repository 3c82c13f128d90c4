// CreateCertificate as policy: who is calling, what may they have, for how long.
// Transport-free so it can be tested and benchmarked without gRPC.
import { AuthorityDeniedError, AuthorityUnavailableError, type Authority } from "../authority/authority.js";
import { CsrError, decodeCsr, type Csr, type DecodedCsr } from "../pki/csr.js";
import { MAX_NAME_ATTRIBUTE_LENGTH } from "../pki/name.js";
import { parseSpiffeId, parseWorkloadId, SpiffeIdError, type SpiffeId } from "../pki/spiffe.js";
import { formatDuration } from "../config/duration.js";
import {
  AuthenticationError,
  AuthenticatorUnavailableError,
  type AuthenticatedCaller,
  type CallerCredentials,
} from "../identity/authenticator.js";

/** gRPC status codes used by the CA API (numeric values from the gRPC spec). */
export const Code = {
  INVALID_ARGUMENT: 3,
  PERMISSION_DENIED: 7,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;
export type CodeValue = (typeof Code)[keyof typeof Code];

/** Where a request failed: istiod's CA metrics count failures by these stages. */
export type IssueStage = "not-ready" | "authn" | "csr-parse" | "csr" | "ttl" | "sign";

export class CaServiceError extends Error {
  override name = "CaServiceError";
  /** Set by createCertificate; undefined for errors raised outside it. */
  stage?: IssueStage;
  constructor(
    readonly code: CodeValue,
    message: string,
  ) {
    super(message);
  }
}

function label(err: unknown, stage: IssueStage): unknown {
  if (err instanceof CaServiceError) err.stage ??= stage;
  return err;
}

/** Runs `f`, labelling a CaServiceError it throws with `stage` (for the metrics). */
function at<T>(stage: IssueStage, f: () => T): T {
  try {
    return f();
  } catch (err) {
    throw label(err, stage);
  }
}

export interface CaPolicy {
  trustDomain: string;
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
  allowCommonName: boolean;
  /** `namespace/serviceaccount` of callers that may use ImpersonatedIdentity. */
  trustedNodeAccounts: ReadonlySet<string>;
}

export interface CertificateRequest {
  csr: string;
  validityDuration: number;
  metadata?: Record<string, unknown>;
}

export interface CaServiceDeps {
  authority: Authority;
  authenticate(creds: CallerCredentials): Promise<AuthenticatedCaller>;
  policy: CaPolicy;
}

export interface IssueResult {
  chain: string[];
  identity: SpiffeId;
  caller: AuthenticatedCaller;
}

async function authenticate(deps: CaServiceDeps, creds: CallerCredentials): Promise<AuthenticatedCaller> {
  try {
    return await deps.authenticate(creds);
  } catch (err) {
    if (err instanceof AuthenticatorUnavailableError)
      throw new CaServiceError(Code.UNAVAILABLE, `cannot authenticate right now: ${err.message}`);
    if (err instanceof AuthenticationError) throw new CaServiceError(Code.UNAUTHENTICATED, err.message);
    throw err;
  }
}

function resolveIdentity(
  deps: CaServiceDeps,
  caller: AuthenticatedCaller,
  metadata: Record<string, unknown> | undefined,
): SpiffeId {
  const impersonated = metadata?.ImpersonatedIdentity;
  if (impersonated === undefined || impersonated === "") return caller.identity;
  if (typeof impersonated !== "string")
    throw new CaServiceError(
      Code.INVALID_ARGUMENT,
      "metadata ImpersonatedIdentity must be a string SPIFFE ID",
    );
  const account = `${caller.namespace ?? ""}/${caller.serviceAccount ?? ""}`;
  if (!deps.policy.trustedNodeAccounts.has(account))
    throw new CaServiceError(
      Code.PERMISSION_DENIED,
      `${caller.identity.uri} may not request certificates for other identities (ImpersonatedIdentity); list "${account}" in authentication.trustedNodeAccounts if it is a node agent`,
    );
  let id: SpiffeId;
  try {
    id = parseSpiffeId(impersonated);
  } catch (err) {
    throw new CaServiceError(
      Code.INVALID_ARGUMENT,
      `ImpersonatedIdentity: ${(err as SpiffeIdError).message}`,
    );
  }
  if (id.trustDomain !== deps.policy.trustDomain)
    throw new CaServiceError(
      Code.PERMISSION_DENIED,
      `ImpersonatedIdentity ${id.uri} is in trust domain ${id.trustDomain}, this CA serves ${deps.policy.trustDomain}`,
    );
  // Only leaf workload IDs: not the trust domain itself, not deeper or other paths.
  try {
    return parseWorkloadId(impersonated, deps.policy.trustDomain);
  } catch (err) {
    throw new CaServiceError(
      Code.INVALID_ARGUMENT,
      `ImpersonatedIdentity: ${(err as SpiffeIdError).message}`,
    );
  }
}

/** Rejects a CSR that asks for anything other than the caller's own identity. */
export function checkCsrAgainstIdentity(csr: Csr | DecodedCsr, identity: SpiffeId): void {
  const { uris, dnsNames, ipAddresses, emails, other } = csr.sans;
  if (uris.length > 1)
    throw new CaServiceError(
      Code.INVALID_ARGUMENT,
      `CSR asks for ${uris.length} URI SANs; an SVID has exactly one (${identity.uri})`,
    );
  if (uris.length === 1 && uris[0] !== identity.uri)
    throw new CaServiceError(
      Code.INVALID_ARGUMENT,
      `CSR asks for identity ${uris[0]} but the caller authenticated as ${identity.uri}; request your own identity or omit the URI SAN`,
    );
  const extra = [
    ...dnsNames.map((d) => `DNS:${d}`),
    ...ipAddresses.map((i) => `IP:${i}`),
    ...emails.map((e) => `email:${e}`),
  ];
  if (extra.length || other)
    throw new CaServiceError(
      Code.INVALID_ARGUMENT,
      `CSR asks for SANs a workload certificate may not carry (${extra.join(", ") || `${other} other names`}); only the SPIFFE URI is allowed`,
    );
  if (csr.requestsCa)
    throw new CaServiceError(
      Code.INVALID_ARGUMENT,
      "CSR asks for a CA certificate (basicConstraints CA:true); workloads get leaf certificates only",
    );
}

export function resolveTtl(policy: CaPolicy, requested: number): number {
  if (!Number.isFinite(requested))
    throw new CaServiceError(Code.INVALID_ARGUMENT, "validity_duration is not a number");
  if (requested <= 0) return policy.defaultTtlSeconds;
  if (requested > policy.maxTtlSeconds)
    throw new CaServiceError(
      Code.INVALID_ARGUMENT,
      `requested validity ${formatDuration(requested)} exceeds the maximum ${formatDuration(policy.maxTtlSeconds)} (certificates.maxTtl); ask for less`,
    );
  return requested;
}

export async function createCertificate(
  deps: CaServiceDeps,
  req: CertificateRequest,
  creds: CallerCredentials,
): Promise<IssueResult> {
  const readiness = deps.authority.ready();
  if (!readiness.ready)
    throw Object.assign(
      new CaServiceError(
        Code.UNAVAILABLE,
        `certificate authority (${deps.authority.kind}) is not ready: ${readiness.reason}`,
      ),
      { stage: "not-ready" as const },
    );
  const caller = await authenticate(deps, creds).catch((err: unknown) => {
    throw label(err, "authn");
  });
  const identity = at("authn", () => resolveIdentity(deps, caller, req.metadata));
  // Decoded and checked here; its signature is verified where it is signed (the authority,
  // on an issuance worker when the server has them), so a certificate costs one hand-off.
  let csr: DecodedCsr;
  try {
    csr = decodeCsr(req.csr);
  } catch (err) {
    if (err instanceof CsrError)
      throw label(new CaServiceError(Code.INVALID_ARGUMENT, err.message), "csr-parse");
    throw label(err, "csr-parse");
  }
  at("csr", () => checkCsrAgainstIdentity(csr, identity));
  const ttlSeconds = at("ttl", () => resolveTtl(deps.policy, req.validityDuration));
  const commonName = deps.policy.allowCommonName ? csr.commonName : undefined;
  if (commonName !== undefined && [...commonName].length > MAX_NAME_ATTRIBUTE_LENGTH)
    throw new CaServiceError(
      Code.INVALID_ARGUMENT,
      `CSR common name is ${[...commonName].length} characters; a certificate allows at most ${MAX_NAME_ATTRIBUTE_LENGTH} (RFC 5280): shorten it or omit it`,
    );
  try {
    const issued = await deps.authority.sign(
      { csr, ttlSeconds, ...(commonName !== undefined ? { commonName } : {}), ...callerTokenOf(creds) },
      identity,
    );
    const chain = [issued.leafPem, ...issued.intermediatesPem, issued.rootsPem.join("")];
    return { chain, identity, caller };
  } catch (err) {
    if (err instanceof CsrError)
      throw label(new CaServiceError(Code.INVALID_ARGUMENT, err.message), "csr-parse");
    const e =
      err instanceof AuthorityUnavailableError
        ? new CaServiceError(Code.UNAVAILABLE, err.message)
        : err instanceof AuthorityDeniedError
          ? new CaServiceError(Code.PERMISSION_DENIED, err.message)
          : new CaServiceError(Code.INTERNAL, `signing failed: ${(err as Error).message}`);
    e.stage = err instanceof AuthorityUnavailableError ? "not-ready" : "sign";
    throw e;
  }
}

/** The bearer token, for authorities that let the workload's own credential decide (vault-sign, identity: workload). */
function callerTokenOf(creds: CallerCredentials): { callerToken?: string } {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(creds.authorization ?? "");
  return m ? { callerToken: m[1]! } : {};
}
