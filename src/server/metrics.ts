// Prometheus metrics for the CA server; one registry per server instance so tests
// can run several servers in one process.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export interface CaMetrics {
  registry: Registry;
  requests: Counter<"result" | "code">;
  latency: Histogram<"result">;
  authorityReady: Gauge<"authority">;
  rootExpiry: Gauge;
  servingCertExpiry: Gauge;
  caReloads: Counter<"result">;
}

export function createCaMetrics(withDefaults = true): CaMetrics {
  const registry = new Registry();
  if (withDefaults) collectDefaultMetrics({ register: registry, prefix: "meshvault_" });
  return {
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
      help: "1 when the signing authority can sign",
      labelNames: ["authority"],
      registers: [registry],
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
  };
}
