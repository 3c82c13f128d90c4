// istiod's CA metrics, under istiod's names and labels (security/pkg/server/ca/monitoring.go
// in istio/istio), so that alerts and dashboards written for istiod's CA keep working when
// meshvault signs instead. istiod exports its counters without a `_total` suffix (OpenTelemetry's
// Prometheus exporter with WithoutCounterSuffixes), and so do these.
import { Counter, Gauge, type Registry } from "prom-client";
import type { IssueStage } from "./ca-service.js";

/** istiod's `error` label values for citadel_server_csr_sign_err_count (security/pkg/pki/error). */
export type IstioSignError = "CA_NOT_READY" | "CSR_ERROR" | "TTL_ERROR" | "CERT_GEN_ERROR";

export interface IstioCaMetrics {
  /** One CreateCertificate call, as istiod counts it. */
  record(outcome: { ok: true } | { ok: false; stage: IssueStage | undefined }): void;
  /** Unix seconds of the first root's and the signing CA certificate's expiry. */
  setExpiry(e: { root?: number; certChain?: number }): void;
}

export function createIstioCaMetrics(registry: Registry): IstioCaMetrics {
  const registers = [registry];
  const csr = new Counter({
    name: "citadel_server_csr_count",
    help: "The number of CSRs received by Citadel server.",
    registers,
  });
  const authn = new Counter({
    name: "citadel_server_authentication_failure_count",
    help: "The number of authentication failures.",
    registers,
  });
  const parse = new Counter({
    name: "citadel_server_csr_parsing_err_count",
    help: "The number of errors occurred when parsing the CSR.",
    registers,
  });
  const idExtraction = new Counter({
    name: "citadel_server_id_extraction_err_count",
    help: "The number of errors occurred when extracting the ID from CSR.",
    registers,
  });
  const signErrors = new Counter({
    name: "citadel_server_csr_sign_err_count",
    help: "The number of errors occurred when signing the CSR.",
    labelNames: ["error"],
    registers,
  });
  const success = new Counter({
    name: "citadel_server_success_cert_issuance_count",
    help: "The number of certificates issuances that have succeeded.",
    registers,
  });
  // Series that exist from the start: rate() and absent() alerts need them before the first error.
  for (const c of [csr, authn, parse, idExtraction, success]) c.inc(0);
  for (const error of ["CA_NOT_READY", "CSR_ERROR", "TTL_ERROR", "CERT_GEN_ERROR"])
    signErrors.inc({ error }, 0);

  const expiry: { root?: number; certChain?: number } = {};
  const timestamp = (name: string, help: string, key: "root" | "certChain"): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        if (expiry[key] !== undefined) this.set(expiry[key]);
      },
    });
  };
  const remaining = (name: string, help: string, key: "root" | "certChain"): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        if (expiry[key] !== undefined) this.set(expiry[key] - Date.now() / 1000);
      },
    });
  };
  timestamp(
    "citadel_server_root_cert_expiry_timestamp",
    "The unix timestamp, in seconds, when the root cert will expire.",
    "root",
  );
  remaining(
    "citadel_server_root_cert_expiry_seconds",
    "The time remaining, in seconds, before the root cert will expire. A negative value indicates the cert is expired.",
    "root",
  );
  timestamp(
    "citadel_server_cert_chain_expiry_timestamp",
    "The unix timestamp, in seconds, when the CA certificate that signs (meshvault's intermediate) will expire.",
    "certChain",
  );
  remaining(
    "citadel_server_cert_chain_expiry_seconds",
    "The time remaining, in seconds, before the CA certificate that signs will expire. A negative value indicates the cert is expired.",
    "certChain",
  );

  return {
    record(o) {
      csr.inc();
      if (o.ok) return success.inc();
      switch (o.stage) {
        case "authn":
          return authn.inc();
        case "csr-parse":
          return parse.inc();
        case "not-ready":
          return signErrors.inc({ error: "CA_NOT_READY" });
        case "ttl":
          return signErrors.inc({ error: "TTL_ERROR" });
        case "csr":
          return signErrors.inc({ error: "CSR_ERROR" });
        default:
          return signErrors.inc({ error: "CERT_GEN_ERROR" });
      }
    },
    setExpiry(e) {
      if (e.root !== undefined) expiry.root = e.root;
      if (e.certChain !== undefined) expiry.certChain = e.certChain;
    },
  };
}
