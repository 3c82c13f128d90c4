// Prometheus metrics for the CA server; one registry per server instance so tests
// can run several servers in one process.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Readiness } from "../authority/authority.js";
import { parseCertificates } from "../pki/certificate.js";
import { createIstioCaMetrics, type IstioCaMetrics } from "./istio-metrics.js";

export interface CaMetrics {
  registry: Registry;
  requests: Counter<"result" | "code">;
  latency: Histogram<"result">;
  authorityReady: Gauge<"authority">;
  rootExpiry: Gauge;
  servingCertExpiry: Gauge;
  caReloads: Counter<"result">;
  /** The signing CA certificate's expiry (unix seconds), from the serving certificate's chain. */
  intermediateExpiry: Gauge;
  /** istiod's citadel_server_* metrics, alongside ours. */
  istio: IstioCaMetrics;
  /**
   * The server's readiness, read at every scrape so `meshvault_authority_ready` says what
   * /readyz says at that moment. Set by the server once it exists.
   */
  readiness?: () => { kind: string; readiness: Readiness };
}

export function createCaMetrics(withDefaults = true): CaMetrics {
  const registry = new Registry();
  // Process metrics under their standard names (process_cpu_seconds_total, ...), as every
  // exporter and istiod use them, so stock dashboards find them.
  if (withDefaults) collectDefaultMetrics({ register: registry });
  const metrics: CaMetrics = {
    registry,
    requests: new Counter({
      name: "meshvault_csr_requests_total",
      help: "CreateCertificate calls by result (issued or the gRPC status name)",
      labelNames: ["result", "code"],
      registers: [registry],
    }),
    latency: new Histogram({
      name: "meshvault_csr_duration_seconds",
      help: "CreateCertificate latency",
      labelNames: ["result"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    authorityReady: new Gauge({
      name: "meshvault_authority_ready",
      help: "1 when the signing authority can sign right now (what /readyz says)",
      labelNames: ["authority"],
      registers: [registry],
      collect() {
        const r = metrics.readiness?.();
        if (r) this.set({ authority: r.kind }, r.readiness.ready ? 1 : 0);
      },
    }),
    rootExpiry: new Gauge({
      name: "meshvault_root_cert_expiry_seconds",
      help: "Unix time at which the earliest trust-bundle root expires",
      registers: [registry],
    }),
    caReloads: new Counter({
      name: "meshvault_ca_reloads_total",
      help: "Reloads of signing material (files, Vault KV, Vault intermediate renewals) by result",
      labelNames: ["result"],
      registers: [registry],
    }),
    servingCertExpiry: new Gauge({
      name: "meshvault_serving_cert_expiry_seconds",
      help: "Unix time at which the CA server's own TLS certificate expires",
      registers: [registry],
    }),
    intermediateExpiry: new Gauge({
      name: "meshvault_intermediate_cert_expiry_seconds",
      help: "Unix time at which the earliest CA certificate between the leaves and the root (the signing intermediate) expires",
      registers: [registry],
    }),
    istio: createIstioCaMetrics(registry),
  };
  return metrics;
}

/**
 * The signing CA's expiry, read from a chain the authority issued (leaf first): the earliest
 * certificate after the leaf. Authorities that sign at the root (no intermediate) have none.
 */
export function recordIntermediateExpiry(metrics: CaMetrics, certChainPem: string): void {
  const cas = parseCertificates(certChainPem).slice(1);
  if (cas.length === 0) return;
  const earliest = Math.min(...cas.map((c) => c.notAfter.getTime())) / 1000;
  metrics.intermediateExpiry.set(earliest);
  metrics.istio.setExpiry({ certChain: earliest });
}
