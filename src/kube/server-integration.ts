// What the CA server gets from the `kubernetes:` section: the TokenReview
// authenticator and the leader-elected root publisher. run.ts calls this once.
import { existsSync, readFileSync } from "node:fs";
import type { Logger } from "pino";
import type { Authenticator } from "../identity/authenticator.js";
import { loadKubeConfig, SERVICE_ACCOUNT_DIR } from "./client.js";
import type { KubernetesSection } from "./config-schema.js";
import { startRootPublisher, type RootPublisherHandle } from "./root-publisher-service.js";
import { TokenReviewAuthenticator } from "./tokenreview.js";

export interface KubernetesIntegration {
  authenticators: Authenticator[];
  /** Starts the root publisher (after the authority has started). */
  start(roots: () => string[]): Promise<void>;
  publisher(): RootPublisherHandle | undefined;
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
  const log = ctx.log.child({ component: "kubernetes" });
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
  return {
    authenticators,
    async start(roots) {
      const rp = section.rootPublisher;
      if (!rp.enabled || handle) return;
      handle = await startRootPublisher({
        kubeConfig: kc,
        roots,
        namespace: ownNamespace(section.namespace),
        leaseName: rp.leaseName,
        identity: process.env.POD_NAME ? `${process.env.POD_NAME}_${process.pid}` : undefined,
        leaseDurationSeconds: rp.leaseDuration,
        renewPeriodMs: rp.renewPeriod * 1000,
        configMapName: rp.configMapName,
        namespaceSelector: rp.namespaceSelector,
        overlapSeconds: rp.overlap,
        resyncSeconds: rp.resync,
        log: {
          info: (m) => log.info(m),
          warn: (m) => log.warn(m),
          debug: (m) => log.debug(m),
        },
      });
    },
    publisher: () => handle,
    async close() {
      await handle?.close();
    },
  };
}
