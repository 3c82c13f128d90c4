// The server's configuration: one typed, validated shape. Unknown keys are errors
// (a typo must not silently fall back to a default).
import { z } from "zod";
import { KEY_ALGORITHMS } from "../pki/keys.js";
import { validateTrustDomain } from "../pki/spiffe.js";
import { durationSchema } from "./duration-schema.js";
import { namespacedNameProblem } from "../pki/kube-names.js";
import {
  dnsNameSchema,
  ipAddressSchema,
  namespaceSchema,
  nodeAccountSchema,
  serviceAccountSchema,
} from "./name-schemas.js";
import {
  vaultIntermediateAuthoritySchema,
  vaultKvAuthoritySchema,
  vaultSectionSchema,
  vaultSignAuthoritySchema,
} from "./vault-schema.js";
import { kubernetesSectionSchema } from "../kube/config-schema.js";

/** A duration field: "24h", "90d", "30m", or seconds; parsed to seconds. */
export const duration = durationSchema(z);

/** The gRPC servers that can serve the CA API (config `grpcServer`). */
export const GRPC_SERVERS = ["grpc-js", "node-http2"] as const;

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):\d{1,5}$/, 'expected "host:port", e.g. "0.0.0.0:15012"');

export const localAuthoritySchema = z
  .object({
    type: z.literal("local"),
    keyAlgorithm: z.enum(KEY_ALGORITHMS as [string, ...string[]]).default("ec-p256"),
    rootTtl: duration.default(10 * 365 * 86400),
    intermediateTtl: duration.default(365 * 86400),
  })
  .strict();

export const filesAuthoritySchema = z
  .object({
    type: z.literal("files"),
    /** Istio plug-in CA directory (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem or tls.*). */
    dir: z.string().min(1),
    pollInterval: duration.default(10),
  })
  .strict();

export const jwtIssuerSchema = z
  .object({
    issuer: z.string().min(1),
    audiences: z.array(z.string().min(1)).min(1).default(["istio-ca"]),
    jwksFile: z.string().optional(),
    jwksUrl: z.string().url().optional(),
    /** Discover the JWKS from `<issuer>/.well-known/openid-configuration`. */
    oidcDiscovery: z.boolean().default(false),
  })
  .strict()
  .refine((j) => [j.jwksFile, j.jwksUrl, j.oidcDiscovery || undefined].filter(Boolean).length === 1, {
    message: "set exactly one of jwksFile, jwksUrl or oidcDiscovery: true",
  });

export const serverConfigSchema = z
  .object({
    trustDomain: z
      .string()
      .default("cluster.local")
      .superRefine((td, ctx) => {
        try {
          validateTrustDomain(td);
        } catch (err) {
          ctx.addIssue({ code: "custom", message: (err as Error).message });
        }
      }),
    /** Where the local CA, the local token issuer and the trust bundle file live. */
    dataDir: z.string().default("./.meshvault"),
    listen: z
      .object({
        /** Istio CA gRPC API over TLS (istiod uses 15012). */
        grpc: hostPort.default("127.0.0.1:15012"),
        /** Plain HTTP for /healthz, /readyz, /roots, /metrics (istiod monitoring uses 15014). */
        http: hostPort.default("127.0.0.1:15014"),
      })
      .strict()
      .default({ grpc: "127.0.0.1:15012", http: "127.0.0.1:15014" }),
    servingCertificate: z
      .object({
        dnsNames: z
          .array(dnsNameSchema)
          .default(["istiod.istio-system.svc", "meshvault.istio-system.svc", "localhost"]),
        ipAddresses: z.array(ipAddressSchema).default(["127.0.0.1"]),
        ttl: duration.default(86400),
        /** Service account the serving certificate's SPIFFE ID names. */
        namespace: namespaceSchema.default("istio-system"),
        serviceAccount: serviceAccountSchema.default("meshvault"),
      })
      .strict()
      .default({
        dnsNames: ["istiod.istio-system.svc", "meshvault.istio-system.svc", "localhost"],
        ipAddresses: ["127.0.0.1"],
        ttl: 86400,
        namespace: "istio-system",
        serviceAccount: "meshvault",
      }),
    /** Threads that verify CSRs and sign leaves; default one per core, 0 = all on the main thread. */
    workers: z.coerce.number().int().min(0).max(256).optional(),
    /** Which gRPC server serves the CA API: grpc-js (the library) or the lean node:http2 one. */
    grpcServer: z.enum(GRPC_SERVERS).default("node-http2"),
    /** Trust bundle written here on every change, for workloads that read a file; default <dataDir>/root-cert.pem. */
    rootCertFile: z.string().optional(),
    authority: z
      .discriminatedUnion("type", [
        localAuthoritySchema,
        filesAuthoritySchema,
        vaultSignAuthoritySchema,
        vaultKvAuthoritySchema,
        vaultIntermediateAuthoritySchema,
      ])
      .default({
        type: "local",
        keyAlgorithm: "ec-p256",
        rootTtl: 10 * 365 * 86400,
        intermediateTtl: 365 * 86400,
      }),
    /** How to reach and log in to Vault / OpenBao (VAULT_* / BAO_* fill gaps; this wins). */
    vault: vaultSectionSchema.optional(),
    /** TokenReview authentication and root ConfigMaps (see src/kube/config-schema.ts); absent = off. */
    kubernetes: kubernetesSectionSchema.optional(),
    /** Root rotation (`meshvault root rotate`): where its state lives and how often servers read it. */
    rotation: z
      .object({
        /** `vault:<kv mount>/data/<path>`, `file:<path>` or `kube:<namespace>/<configmap>`; default by authority (see README). */
        state: z
          .string()
          .regex(
            /^(vault|file|kube):.+/,
            'expected "vault:<mount>/data/<path>", "file:<path>" or "kube:<namespace>/<configmap>"',
          )
          .superRefine((v, ctx) => {
            const p = v.startsWith("kube:") ? namespacedNameProblem(v.slice(5), "ConfigMap", v) : undefined;
            if (p) ctx.addIssue({ code: "custom", message: p });
          })
          .optional(),
        pollInterval: duration.default(10),
      })
      .strict()
      .default({ pollInterval: 10 }),
    authentication: z
      .object({
        jwt: z.array(jwtIssuerSchema).default([]),
        /** Accept a client certificate chaining to our trust bundle (workloads renewing). */
        clientCertificate: z.boolean().default(true),
        /** meshvault's own token issuer for machines without Kubernetes (`meshvault token create`). */
        localIssuer: z.boolean().default(true),
        /** `<namespace>/<serviceaccount>` allowed to ask for another identity (ImpersonatedIdentity), e.g. ztunnel. */
        trustedNodeAccounts: z.array(nodeAccountSchema).default([]),
      })
      .strict()
      .default({ jwt: [], clientCertificate: true, localIssuer: true, trustedNodeAccounts: [] }),
    certificates: z
      .object({
        /** Lifetime when the caller asks for <= 0 (Istio's default is 24h). */
        defaultTtl: duration.default(86400),
        /** Longer requests are rejected (Istio's MAX_WORKLOAD_CERT_TTL is 90 days). */
        maxTtl: duration.default(90 * 86400),
        /** Copy a CSR's common name into the certificate (Istio leaves the subject empty). */
        allowCommonName: z.boolean().default(false),
      })
      .strict()
      .default({ defaultTtl: 86400, maxTtl: 90 * 86400, allowCommonName: false }),
    log: z
      .object({
        level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
        /** Default: pretty when stderr is a terminal, else json. */
        format: z.enum(["json", "pretty"]).optional(),
      })
      .strict()
      .default({ level: "info" }),
  })
  .strict();

export type ServerConfig = z.output<typeof serverConfigSchema>;
export type ServerConfigInput = z.input<typeof serverConfigSchema>;
export type AuthorityConfig = ServerConfig["authority"];
export type { VaultSection } from "./vault-schema.js";
