// SPIFFE IDs per the SPIFFE-ID specification: strict at the edge, so nothing
// downstream has to wonder whether an ID is well-formed. The one parser and validator for
// IDs and allow-list patterns: the CA, the agent and the tunnel all use these.
import { namespaceProblem, serviceAccountProblem } from "./kube-names.js";

export class SpiffeIdError extends Error {
  override name = "SpiffeIdError";
}

export interface SpiffeId {
  readonly trustDomain: string;
  /** Path with leading slash, or "" for a trust-domain ID. */
  readonly path: string;
  /** Canonical string form `spiffe://<td><path>`. */
  readonly uri: string;
}

const MAX_LENGTH = 2048;
const TD_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;

export function validateTrustDomain(td: string): string {
  if (td.length === 0) throw new SpiffeIdError("trust domain is empty");
  if (td.length > 255) throw new SpiffeIdError("trust domain is longer than 255 characters");
  if (!TD_CHARS.test(td))
    throw new SpiffeIdError(
      `trust domain ${JSON.stringify(td)} has characters outside [a-z0-9.-_] (lowercase letters, digits, '.', '-', '_'; no port or userinfo)`,
    );
  return td;
}

function validatePath(path: string): void {
  if (path === "") return;
  if (!path.startsWith("/")) throw new SpiffeIdError("path must start with '/'");
  if (path.endsWith("/")) throw new SpiffeIdError("path must not end with '/'");
  for (const seg of path.slice(1).split("/")) {
    if (seg === "") throw new SpiffeIdError("path has an empty segment ('//')");
    if (seg === "." || seg === "..") throw new SpiffeIdError(`path has a '${seg}' segment`);
    if (!SEGMENT_CHARS.test(seg))
      throw new SpiffeIdError(
        `path segment ${JSON.stringify(seg)} has characters outside [a-zA-Z0-9.-_] (percent-encoding is not allowed)`,
      );
  }
}

export function parseSpiffeId(input: string): SpiffeId {
  if (input.length > MAX_LENGTH) throw new SpiffeIdError(`SPIFFE ID is longer than ${MAX_LENGTH} bytes`);
  const scheme = "spiffe://";
  if (!input.toLowerCase().startsWith(scheme))
    throw new SpiffeIdError(
      `${JSON.stringify(input.slice(0, 64))} is not a SPIFFE ID: scheme must be spiffe://`,
    );
  if (!input.startsWith(scheme)) throw new SpiffeIdError("scheme must be lowercase 'spiffe'");
  const rest = input.slice(scheme.length);
  if (rest.includes("?")) throw new SpiffeIdError("SPIFFE ID must not have a query");
  if (rest.includes("#")) throw new SpiffeIdError("SPIFFE ID must not have a fragment");
  const slash = rest.indexOf("/");
  const td = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? "" : rest.slice(slash);
  if (td.includes("@")) throw new SpiffeIdError("trust domain must not contain userinfo");
  if (td.includes(":")) throw new SpiffeIdError("trust domain must not contain a port");
  validateTrustDomain(td);
  validatePath(path);
  return { trustDomain: td, path, uri: input };
}

export function spiffeId(trustDomain: string, path: string): SpiffeId {
  return parseSpiffeId(`spiffe://${trustDomain}${path}`);
}

/** Istio's workload identity `spiffe://<td>/ns/<ns>/sa/<sa>`, from valid Kubernetes names only. */
export function workloadId(trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
  const nsProblem = namespaceProblem(namespace);
  if (nsProblem) throw new SpiffeIdError(`namespace ${JSON.stringify(namespace.slice(0, 80))} ${nsProblem}`);
  const saProblem = serviceAccountProblem(serviceAccount);
  if (saProblem)
    throw new SpiffeIdError(`service account ${JSON.stringify(serviceAccount.slice(0, 80))} ${saProblem}`);
  return spiffeId(trustDomain, `/ns/${namespace}/sa/${serviceAccount}`);
}

/**
 * Namespace and service account of an Istio workload ID: exactly `/ns/<ns>/sa/<sa>` with valid
 * Kubernetes names; undefined for any other shape.
 */
export function istioParts(id: SpiffeId): { namespace: string; serviceAccount: string } | undefined {
  const m = id.path.match(/^\/ns\/([^/]+)\/sa\/([^/]+)$/);
  if (!m || namespaceProblem(m[1]!) || serviceAccountProblem(m[2]!)) return undefined;
  return { namespace: m[1]!, serviceAccount: m[2]! };
}

/**
 * Parses an ID that must be an Istio workload ID, `spiffe://<td>/ns/<ns>/sa/<sa>` with a
 * DNS-1123 label namespace and a DNS-1123 subdomain service account; in `trustDomain` when given.
 * Throws SpiffeIdError naming what is wrong.
 */
export function parseWorkloadId(input: string, trustDomain?: string): SpiffeId {
  const id = parseSpiffeId(input);
  if (trustDomain !== undefined && id.trustDomain !== trustDomain)
    throw new SpiffeIdError(`${id.uri} is in trust domain ${id.trustDomain}, expected ${trustDomain}`);
  const m = id.path.match(/^\/ns\/([^/]+)\/sa\/([^/]+)$/);
  if (!m)
    throw new SpiffeIdError(
      `${id.uri} is not a workload ID: expected exactly spiffe://${id.trustDomain}/ns/<namespace>/sa/<service-account>`,
    );
  workloadId(id.trustDomain, m[1]!, m[2]!);
  return id;
}

/**
 * An allow-list entry: an exact SPIFFE ID, or `spiffe://<td>/<path>/*` for every ID under that
 * path (`spiffe://td/ns/prod/*`). Parsed with the same rules as IDs; throws SpiffeIdError.
 */
export function parseSpiffePattern(pattern: string): string {
  if (pattern.endsWith("/*")) {
    parseSpiffeId(pattern.slice(0, -2));
    return pattern;
  }
  if (pattern.includes("*")) throw new SpiffeIdError("'*' is allowed only as a whole last segment ('/*')");
  return parseSpiffeId(pattern).uri;
}

/**
 * Matches an ID against an allow-list entry: exact, or a prefix ending in `/*`
 * (`spiffe://td/ns/prod/*` allows every identity in namespace prod). Whole segments only,
 * and the ID itself went through parseSpiffeId, so `..` or `%2f` cannot escape the prefix.
 */
export function matchesPattern(id: SpiffeId, pattern: string): boolean {
  if (pattern.endsWith("/*")) return id.uri.startsWith(pattern.slice(0, -1));
  return id.uri === pattern;
}
