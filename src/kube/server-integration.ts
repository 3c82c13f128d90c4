// What the CA server gets from the `kubernetes:` section: the TokenReview
// authenticator, the leader-elected root publisher and the leader-elected writer of
// istiod's serving certificate. run.ts calls this once.
import { existsSync, readFileSync } from "node:fs";
import type { Logger } from "pino";
import type { Authority } from "../authority/authority.js";
import type { Authenticator } from "../identity/authenticator.js";
import { loadKubeConfig, SERVICE_ACCOUNT_DIR } from "./client.js";
import type { KubernetesSection } from "./config-schema.js";
import { startIstiodCertWriter, type IstiodCertHandle } from "./istiod-cert.js";
import { startRootPublisher, type RootPublisherHandle } from "./root-publisher-service.js";
import { TokenReviewAuthenticator } from "./tokenreview.js";

export interface KubernetesIntegration {
  authenticators: Authenticator[];
  /**
   * Starts the root publisher and the istiod certificate writer (after the authority has
   * started); the writer signs with `authority`.
   */
  start(roots: () => string[], authority?: Pick<Authority, "sign" | "trustBundle">): Promise<void>;
  publisher(): RootPublisherHandle | undefined;
  istiodCertificate(): IstiodCertHandle | undefined;
  close(): Promise<void>;
}

/** The namespace meshvault runs in: config, POD_NAMESPACE, the pod's namespace file, istio-system. */
export function ownNamespace(configured?: string): string {
  if (configured) return configured;
  if (process.env.POD_NAMESPACE) return process.env.POD_NAMESPACE;
  const file = `${SERVICE_ACCOUNT_DIR}/namespace`;
  if (existsSync(file)) {
    const ns = readFileSync(file, "utf8").trim();
    if (ns) return ns;
  }
  return "istio-system";
}

export function kubernetesIntegration(
  section: KubernetesSection,
  ctx: { trustDomain: string; log: Logger },
): KubernetesIntegration {
  const kc = loadKubeConfig({ kubeconfig: section.kubeconfig, context: section.context });
  const authenticators: Authenticator[] = [];
  const tr = section.tokenReview;
  if (tr.enabled)
    authenticators.push(
      new TokenReviewAuthenticator({
        kubeConfig: kc,
        trustDomain: ctx.trustDomain,
        audiences: tr.audiences,
        clusterId: section.clusterId,
        cacheSize: tr.cacheSize,
        cacheMaxAgeSeconds: tr.cacheMaxAge,
        timeoutMs: tr.timeout * 1000,
      }),
    );
  let handle: RootPublisherHandle | undefined;
  let istiod: IstiodCertHandle | undefined;
  const identity = process.env.POD_NAME ? `${process.env.POD_NAME}_${process.pid}` : undefined;
  return {
    authenticators,
    async start(roots, authority) {
      const rp = section.rootPublisher;
      const ic = section.istiodCertificate;
      if (ic.enabled && !istiod) {
        if (!authority)
          throw new Error(
            "kubernetes.istiodCertificate is enabled but no authority was passed to start(): istiod's certificate cannot be signed (a wiring bug in the caller)",
          );
        istiod = await startIstiodCertWriter({
          kubeConfig: kc,
          authority,
          trustDomain: ctx.trustDomain,
          namespace: ic.namespace,
          secretName: ic.secretName,
          serviceAccount: ic.serviceAccount,
          dnsNames: ic.dnsNames,
          ttlSeconds: ic.ttl,
          checkPeriodMs: ic.checkPeriod * 1000,
          leaseNamespace: ownNamespace(section.namespace),
          leaseName: ic.leaseName,
          identity,
          leaseDurationSeconds: rp.leaseDuration,
          renewPeriodMs: rp.renewPeriod * 1000,
          log: ctx.log.child({ component: "istiod-cert" }),
        });
      }
      if (!rp.enabled || handle) return;
      handle = await startRootPublisher({
        kubeConfig: kc,
        roots,
        namespace: ownNamespace(section.namespace),
        leaseName: rp.leaseName,
        identity,
        leaseDurationSeconds: rp.leaseDuration,
        renewPeriodMs: rp.renewPeriod * 1000,
        configMapName: rp.configMapName,
        namespaceSelector: rp.namespaceSelector,
        overlapSeconds: rp.overlap,
        resyncSeconds: rp.resync,
        log: ctx.log.child({ component: "root-publisher" }),
      });
    },
    publisher: () => handle,
    istiodCertificate: () => istiod,
    async close() {
      await Promise.all([handle?.close(), istiod?.close()]);
    },
  };
}
