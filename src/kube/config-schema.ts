// The server's `kubernetes:` configuration section (TokenReview authentication, the
// root-of-trust ConfigMaps and istiod's serving certificate). Absent section = no
// Kubernetes integration.
import { z } from "zod";
import { durationSchema } from "../config/duration-schema.js";
import { dnsNameSchema, namespaceSchema, serviceAccountSchema } from "../config/name-schemas.js";

const duration = durationSchema(z);

/** istio-csr's defaults for istiod's certificate (add istiod-<revision>.istio-system.svc per revision). */
export const DEFAULT_ISTIOD_DNS_NAMES: readonly string[] = [
  "istiod.istio-system.svc",
  "istiod.istio-system.svc.cluster.local",
  "istio-pilot.istio-system.svc",
];

const positiveDuration = duration.refine((s) => s > 0, { message: "must be longer than 0s" });

export const kubernetesSectionSchema = z
  .object({
    /** kubeconfig file; default in-cluster (service-account mount), else KUBECONFIG / ~/.kube/config. */
    kubeconfig: z.string().min(1).optional(),
    context: z.string().min(1).optional(),
    /** The cluster this CA serves; callers' `clusterid` must match (Istio's default "Kubernetes"). */
    clusterId: z.string().min(1).default("Kubernetes"),
    /** Namespace meshvault runs in (Lease); default POD_NAMESPACE, the pod's namespace file, else istio-system. */
    namespace: z.string().min(1).optional(),
    tokenReview: z
      .object({
        enabled: z.boolean().default(true),
        audiences: z.array(z.string().min(1)).min(1).default(["istio-ca"]),
        cacheSize: z.number().int().positive().default(10_000),
        /** Longest a positive review is reused (also never past the token's exp). */
        cacheMaxAge: duration.default(300),
        timeout: duration.default(5),
      })
      .strict()
      .default({ enabled: true, audiences: ["istio-ca"], cacheSize: 10_000, cacheMaxAge: 300, timeout: 5 }),
    rootPublisher: z
      .object({
        enabled: z.boolean().default(true),
        configMapName: z.string().min(1).default("istio-ca-root-cert"),
        /** Label selector of namespaces to publish into (e.g. "istio-injection=enabled"); default all. */
        namespaceSelector: z.string().optional(),
        /** How long a root the authority dropped stays published next to the new one. */
        overlap: duration.default(86400),
        leaseName: z.string().min(1).default("meshvault-root-publisher"),
        leaseDuration: duration.default(15),
        renewPeriod: duration.default(5),
        /** Full relist period. */
        resync: duration.default(300),
      })
      .strict()
      .default({
        enabled: true,
        configMapName: "istio-ca-root-cert",
        overlap: 86400,
        leaseName: "meshvault-root-publisher",
        leaseDuration: 15,
        renewPeriod: 5,
        resync: 300,
      }),
    /**
     * istiod's XDS serving certificate (Secret `istiod-tls`, what istio-csr writes): needed
     * when meshvault is the mesh CA, so istiod's certificate chains to the mesh root.
     */
    istiodCertificate: z
      .object({
        enabled: z.boolean().default(false),
        /** istiod's namespace: where the Secret is written, and the SPIFFE ID's namespace. */
        namespace: namespaceSchema.default("istio-system"),
        secretName: z.string().min(1).default("istiod-tls"),
        /** istiod's service account: spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>. */
        serviceAccount: serviceAccountSchema.default("istiod"),
        /** Add istiod-<revision>.<namespace>.svc for revisioned installs. */
        dnsNames: z
          .array(dnsNameSchema)
          .min(1)
          .default([...DEFAULT_ISTIOD_DNS_NAMES]),
        ttl: positiveDuration.default(86400),
        /** Its own Lease, in meshvault's namespace (kubernetes.namespace) like the root publisher's. */
        leaseName: z.string().min(1).default("meshvault-istiod-cert"),
        /** How often the Secret is re-read, so an edit or deletion is repaired within this. */
        checkPeriod: positiveDuration.default(30),
      })
      .strict()
      .default({
        enabled: false,
        namespace: "istio-system",
        secretName: "istiod-tls",
        serviceAccount: "istiod",
        dnsNames: [...DEFAULT_ISTIOD_DNS_NAMES],
        ttl: 86400,
        leaseName: "meshvault-istiod-cert",
        checkPeriod: 30,
      }),
  })
  .strict();

export type KubernetesSection = z.output<typeof kubernetesSectionSchema>;
export type KubernetesSectionInput = z.input<typeof kubernetesSectionSchema>;
