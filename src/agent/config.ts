// `meshvault agent` configuration: one typed, validated shape for both the
// sidecar (one identity, from flags) and the node agent (many, from a YAML file).
import { z } from "zod";
import { duration } from "../config/schema.js";
import { KEY_ALGORITHMS, type KeyAlgorithm } from "../pki/keys.js";
import { parseSpiffeId, validateTrustDomain, workloadId } from "../pki/spiffe.js";

/** istio-agent's defaults, relative to the working directory. */
export const DEFAULT_TOKEN_FILE = "./var/run/secrets/tokens/istio-token";
export const DEFAULT_CA_ROOT_FILE = "./var/run/secrets/istio/root-cert.pem";
export const DEFAULT_CA_ADDRESS = "localhost:15012";

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):\d{1,5}$/, 'expected "host:port", e.g. "localhost:15012"');

const trustDomain = z.string().superRefine((td, ctx) => {
  try {
    validateTrustDomain(td);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
  }
});

export const identityConfigSchema = z
  .object({
    /** Label in logs, metrics and status; defaults to `<namespace>/<serviceAccount>`. */
    name: z.string().min(1).optional(),
    namespace: z.string().min(1).optional(),
    serviceAccount: z.string().min(1).optional(),
    /** Explicit SPIFFE ID to request and expect (instead of namespace/serviceAccount). */
    spiffeId: z.string().optional(),
    /** This identity's projected service-account token. */
    tokenFile: z.string().min(1).default(DEFAULT_TOKEN_FILE),
    /** Envoy SDS Unix socket for this identity. */
    sdsSocket: z.string().min(1).optional(),
    /** Directory for cert-chain.pem, key.pem (0600), root-cert.pem. */
    outDir: z.string().min(1).optional(),
    /** Shell command run after each rotation (MESHVAULT_CERT_DIR, MESHVAULT_SPIFFE_ID set). */
    exec: z.string().min(1).optional(),
  })
  .strict()
  .refine((i) => !(i.namespace === undefined) === !(i.serviceAccount === undefined), {
    message: "set both namespace and serviceAccount, or neither",
  })
  .refine((i) => i.sdsSocket !== undefined || i.outDir !== undefined, {
    message: "set sdsSocket, outDir or both: an identity needs somewhere to put its certificate",
  })
  .superRefine((i, ctx) => {
    if (i.spiffeId === undefined) return;
    try {
      parseSpiffeId(i.spiffeId);
    } catch (err) {
      ctx.addIssue({ code: "custom", path: ["spiffeId"], message: (err as Error).message });
    }
  });

export const agentConfigSchema = z
  .object({
    trustDomain: trustDomain.default("cluster.local"),
    ca: z
      .object({
        address: hostPort.default(DEFAULT_CA_ADDRESS),
        rootCertFile: z.string().min(1).default(DEFAULT_CA_ROOT_FILE),
        serverName: z.string().min(1).optional(),
        clusterId: z.string().min(1).optional(),
        headers: z.record(z.string(), z.string()).default({}),
        timeout: duration.default(10),
      })
      .strict()
      .default({ address: DEFAULT_CA_ADDRESS, rootCertFile: DEFAULT_CA_ROOT_FILE, headers: {}, timeout: 10 }),
    keyAlgorithm: z.enum(KEY_ALGORITHMS as [KeyAlgorithm, ...KeyAlgorithm[]]).default("rsa-2048"),
    /** Lifetime to request; the CA decides (Istio's default is 24h). */
    certTtl: duration.default(86400),
    /** istio-agent's SECRET_GRACE_PERIOD_RATIO. */
    graceRatio: z.number().gt(0).lt(1).default(0.5),
    graceJitter: z.number().min(0).lt(0.5).default(0.01),
    /** Exposed as `expiring` (and logged as an error on failed renewals) below this fraction of lifetime. */
    expiringRatio: z.number().gt(0).lt(1).default(0.2),
    backoff: z
      .object({ initial: duration.default(1), max: duration.default(60) })
      .strict()
      .default({ initial: 1, max: 60 }),
    /** Renew over mTLS with the current certificate when the token file is missing. */
    renewWithClientCert: z.boolean().default(true),
    /** CSRs in flight at once (node agent cold start). */
    maxConcurrentRequests: z.number().int().min(1).default(64),
    /** HTTP for /healthz, /_status, /metrics; unset: no status server. */
    statusListen: hostPort.optional(),
    identities: z.array(identityConfigSchema).min(1),
  })
  .strict()
  .superRefine((c, ctx) => {
    const names = new Set<string>();
    const sockets = new Set<string>();
    c.identities.forEach((i, n) => {
      const name = identityName(i);
      if (names.has(name))
        ctx.addIssue({
          code: "custom",
          path: ["identities", n, "name"],
          message: `duplicate identity name ${name}`,
        });
      names.add(name);
      if (i.sdsSocket) {
        if (sockets.has(i.sdsSocket))
          ctx.addIssue({
            code: "custom",
            path: ["identities", n, "sdsSocket"],
            message: `socket ${i.sdsSocket} is used by two identities; each needs its own`,
          });
        sockets.add(i.sdsSocket);
      }
    });
  });

export type AgentConfig = z.output<typeof agentConfigSchema>;
export type AgentConfigInput = z.input<typeof agentConfigSchema>;
export type IdentityConfig = z.output<typeof identityConfigSchema>;

export function identityName(
  i: Pick<IdentityConfig, "name" | "namespace" | "serviceAccount" | "spiffeId">,
): string {
  if (i.name) return i.name;
  if (i.namespace && i.serviceAccount) return `${i.namespace}/${i.serviceAccount}`;
  if (i.spiffeId) return i.spiffeId;
  return "default";
}

/** The SPIFFE ID to request and expect, or undefined to let the CA decide from the token. */
export function expectedSpiffeId(i: IdentityConfig, trustDomain: string): string | undefined {
  if (i.spiffeId) return i.spiffeId;
  if (i.namespace && i.serviceAccount) return workloadId(trustDomain, i.namespace, i.serviceAccount).uri;
  return undefined;
}

export class AgentConfigError extends Error {
  override name = "AgentConfigError";
}

export function parseAgentConfig(input: unknown, source: string): AgentConfig {
  const r = agentConfigSchema.safeParse(input);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => {
    const field = i.path.length ? i.path.join(".") : "(top level)";
    if (i.code === "unrecognized_keys") return `  ${field}: unknown field(s) ${i.keys.join(", ")}`;
    return `  ${field}: ${i.message}`;
  });
  throw new AgentConfigError(`invalid agent configuration (${source}):\n${lines.join("\n")}`);
}
