// `meshvault agent` configuration: one typed, validated shape for both the
// sidecar (one identity, from flags) and the node agent (many, from a YAML file).
//
// The zod schema below is the definition and produces every error message, but zod is
// loaded only when a configuration needs it: `parseAgentConfig` first runs `parseValid`, a
// plain-code acceptor that returns exactly what the schema returns for configurations that are
// obviously valid, and otherwise (anything invalid or unusual) defers to zod. Loading zod and
// building the schemas cost ~7 MB of a sidecar's RSS and ~110 ms of start (bench/agents.ts);
// test/agent/config.test.ts checks the two agree, including on mutated and invalid inputs.
import { createRequire } from "node:module";
import type { z as Zod } from "zod";
import { parseDuration } from "../config/duration.js";
import { durationSchema } from "../config/duration-schema.js";
import { formatIssues } from "../config/issues.js";
import { KEY_ALGORITHMS, type KeyAlgorithm } from "../pki/keys.js";
import { namespaceProblem, serviceAccountProblem } from "../pki/kube-names.js";
import { parseSpiffeId, validateTrustDomain, workloadId } from "../pki/spiffe.js";
import { DEFAULT_CA_ADDRESS, DEFAULT_CA_ROOT_FILE, DEFAULT_TOKEN_FILE } from "./defaults.js";

export { DEFAULT_CA_ADDRESS, DEFAULT_CA_ROOT_FILE, DEFAULT_TOKEN_FILE };

const require = createRequire(import.meta.url);

/** The schemas, built with the zod module passed in (loaded on first use, see above). */
function buildSchemas(z: typeof Zod) {
  const duration = durationSchema(z);

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

  const identityConfigSchema = z
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
      const ns = i.namespace !== undefined ? namespaceProblem(i.namespace) : undefined;
      if (ns) ctx.addIssue({ code: "custom", path: ["namespace"], message: `namespace ${ns}` });
      const sa = i.serviceAccount !== undefined ? serviceAccountProblem(i.serviceAccount) : undefined;
      if (sa) ctx.addIssue({ code: "custom", path: ["serviceAccount"], message: `service account ${sa}` });
      if (i.spiffeId === undefined) return;
      try {
        parseSpiffeId(i.spiffeId);
      } catch (err) {
        ctx.addIssue({ code: "custom", path: ["spiffeId"], message: (err as Error).message });
      }
    });

  const agentConfigSchema = z
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
        .default({
          address: DEFAULT_CA_ADDRESS,
          rootCertFile: DEFAULT_CA_ROOT_FILE,
          headers: {},
          timeout: 10,
        }),
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
  return { identity: identityConfigSchema, agent: agentConfigSchema };
}

type Schemas = ReturnType<typeof buildSchemas>;
let schemas: Schemas | undefined;
const loadSchemas = (): Schemas => (schemas ??= buildSchemas((require("zod") as { z: typeof Zod }).z));

/** The agent configuration's zod schema (loads zod on first call). */
export function agentConfigSchema(): Schemas["agent"] {
  return loadSchemas().agent;
}

export type AgentConfig = Zod.output<Schemas["agent"]>;
export type AgentConfigInput = Zod.input<Schemas["agent"]>;
export type IdentityConfig = Zod.output<Schemas["identity"]>;

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
  const fast = parseValid(input);
  if (fast) return fast;
  const r = agentConfigSchema().safeParse(input);
  if (r.success) return r.data;
  throw new AgentConfigError(formatIssues(r.error, source, "agent", { schema: agentConfigSchema(), input }));
}

// ---- The zod-free path for valid configurations ----

/** Thrown inside parseValid when zod must decide (invalid or unusual input). */
class Defer extends Error {}

type Plain = Record<string, unknown>;

function plainObject(v: unknown): Plain {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Defer();
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) throw new Defer();
  if (Object.getOwnPropertySymbols(v).length > 0) throw new Defer();
  return v as Plain;
}

/** Only known keys, and none explicitly undefined (zod's handling of those is left to zod). */
function checkKeys(o: Plain, known: readonly string[]): void {
  for (const k of Object.keys(o)) if (!known.includes(k) || o[k] === undefined) throw new Defer();
}

function str(v: unknown, minLength = 0): string {
  if (typeof v !== "string" || v.length < minLength) throw new Defer();
  return v;
}

function num(v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new Defer();
  return v;
}

function dur(v: unknown): number {
  if (typeof v === "number") num(v);
  else if (typeof v !== "string") throw new Defer();
  try {
    return parseDuration(v);
  } catch {
    throw new Defer();
  }
}

const HOST_PORT = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):\d{1,5}$/;
const hostPortValue = (v: unknown): string => {
  const s = str(v);
  if (!HOST_PORT.test(s)) throw new Defer();
  return s;
};

const IDENTITY_KEYS = [
  "name",
  "namespace",
  "serviceAccount",
  "spiffeId",
  "tokenFile",
  "sdsSocket",
  "outDir",
  "exec",
] as const;
const CA_KEYS = ["address", "rootCertFile", "serverName", "clusterId", "headers", "timeout"] as const;
const AGENT_KEYS = [
  "trustDomain",
  "ca",
  "keyAlgorithm",
  "certTtl",
  "graceRatio",
  "graceJitter",
  "expiringRatio",
  "backoff",
  "renewWithClientCert",
  "maxConcurrentRequests",
  "statusListen",
  "identities",
] as const;

function identityValue(v: unknown): IdentityConfig {
  const i = plainObject(v);
  checkKeys(i, IDENTITY_KEYS);
  // Output keys in schema order, optional ones only when given, as zod builds it.
  const out: Plain = {};
  for (const k of IDENTITY_KEYS) {
    if (k === "tokenFile")
      out.tokenFile = i.tokenFile === undefined ? DEFAULT_TOKEN_FILE : str(i.tokenFile, 1);
    else if (i[k] !== undefined) out[k] = str(i[k], k === "spiffeId" ? 0 : 1);
  }
  if ((out.namespace === undefined) !== (out.serviceAccount === undefined)) throw new Defer();
  if (out.namespace !== undefined && namespaceProblem(out.namespace as string)) throw new Defer();
  if (out.serviceAccount !== undefined && serviceAccountProblem(out.serviceAccount as string))
    throw new Defer();
  if (out.sdsSocket === undefined && out.outDir === undefined) throw new Defer();
  if (out.spiffeId !== undefined) {
    try {
      parseSpiffeId(out.spiffeId as string);
    } catch {
      throw new Defer();
    }
  }
  return out as IdentityConfig;
}

function caValue(v: unknown): AgentConfig["ca"] {
  if (v === undefined)
    return { address: DEFAULT_CA_ADDRESS, rootCertFile: DEFAULT_CA_ROOT_FILE, headers: {}, timeout: 10 };
  const c = plainObject(v);
  checkKeys(c, CA_KEYS);
  const out: Plain = {
    address: c.address === undefined ? DEFAULT_CA_ADDRESS : hostPortValue(c.address),
    rootCertFile: c.rootCertFile === undefined ? DEFAULT_CA_ROOT_FILE : str(c.rootCertFile, 1),
  };
  if (c.serverName !== undefined) out.serverName = str(c.serverName, 1);
  if (c.clusterId !== undefined) out.clusterId = str(c.clusterId, 1);
  const headers: Record<string, string> = {};
  if (c.headers !== undefined)
    for (const [k, hv] of Object.entries(plainObject(c.headers))) {
      if (k === "__proto__") throw new Defer();
      headers[k] = str(hv);
    }
  out.headers = headers;
  out.timeout = c.timeout === undefined ? 10 : dur(c.timeout);
  return out as AgentConfig["ca"];
}

/**
 * The configuration exactly as the zod schema would return it, or undefined when the input is
 * invalid or unusual: then zod decides (and explains). Never accepts what the schema rejects.
 */
export function parseValid(input: unknown): AgentConfig | undefined {
  try {
    const c = plainObject(input);
    checkKeys(c, AGENT_KEYS);
    const trustDomain = c.trustDomain === undefined ? "cluster.local" : str(c.trustDomain);
    try {
      validateTrustDomain(trustDomain);
    } catch {
      throw new Defer();
    }
    const ratio = (v: unknown, dflt: number, min: number, minIncluded: boolean, max: number): number => {
      if (v === undefined) return dflt;
      const n = num(v);
      if (n > min || (minIncluded && n === min)) {
        if (n < max) return n;
      }
      throw new Defer();
    };
    const keyAlgorithm = c.keyAlgorithm === undefined ? "rsa-2048" : str(c.keyAlgorithm);
    if (!(KEY_ALGORITHMS as readonly string[]).includes(keyAlgorithm)) throw new Defer();
    let backoff = { initial: 1, max: 60 };
    if (c.backoff !== undefined) {
      const b = plainObject(c.backoff);
      checkKeys(b, ["initial", "max"]);
      backoff = {
        initial: b.initial === undefined ? 1 : dur(b.initial),
        max: b.max === undefined ? 60 : dur(b.max),
      };
    }
    const renewWithClientCert = c.renewWithClientCert === undefined ? true : c.renewWithClientCert;
    if (typeof renewWithClientCert !== "boolean") throw new Defer();
    const maxConcurrentRequests = c.maxConcurrentRequests === undefined ? 64 : num(c.maxConcurrentRequests);
    if (!Number.isSafeInteger(maxConcurrentRequests) || maxConcurrentRequests < 1) throw new Defer();
    if (!Array.isArray(c.identities) || c.identities.length === 0) throw new Defer();
    const identities = c.identities.map(identityValue);
    const names = new Set(identities.map(identityName));
    const sockets = identities.flatMap((i) => (i.sdsSocket ? [i.sdsSocket] : []));
    if (names.size !== identities.length || new Set(sockets).size !== sockets.length) throw new Defer();

    const out: Plain = {
      trustDomain,
      ca: caValue(c.ca),
      keyAlgorithm: keyAlgorithm as KeyAlgorithm,
      certTtl: c.certTtl === undefined ? 86400 : dur(c.certTtl),
      graceRatio: ratio(c.graceRatio, 0.5, 0, false, 1),
      graceJitter: ratio(c.graceJitter, 0.01, 0, true, 0.5),
      expiringRatio: ratio(c.expiringRatio, 0.2, 0, false, 1),
      backoff,
      renewWithClientCert,
      maxConcurrentRequests,
    };
    if (c.statusListen !== undefined) out.statusListen = hostPortValue(c.statusListen);
    out.identities = identities;
    return out as AgentConfig;
  } catch (err) {
    if (err instanceof Defer) return undefined;
    throw err;
  }
}
