// Prometheus metrics for one agent; a registry per agent so that several agents
// (the demo, tests, benchmarks) can live in one process.
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import type { WorkloadIdentity } from "./workload.js";
import type { CertState } from "./rotation.js";

const STATES: CertState[] = ["pending", "valid", "renewal-overdue", "expiring", "expired"];

export interface AgentMetrics {
  registry: Registry;
  issued: Counter<"identity" | "via">;
  failures: Counter<"identity">;
}

export function createAgentMetrics(
  identities: () => Iterable<WorkloadIdentity>,
  withDefaults = false,
): AgentMetrics {
  const registry = new Registry();
  if (withDefaults) collectDefaultMetrics({ register: registry, prefix: "meshvault_agent_" });
  new Gauge({
    name: "meshvault_agent_cert_expiry_seconds",
    help: "Unix time at which the workload certificate currently served expires",
    labelNames: ["identity"],
    registers: [registry],
    collect() {
      this.reset();
      for (const id of identities()) {
        const i = id.issued();
        if (i) this.set({ identity: id.name }, i.notAfter.getTime() / 1000);
      }
    },
  });
  new Gauge({
    name: "meshvault_agent_cert_state",
    help: "1 for the state of each identity's certificate (pending, valid, renewal-overdue, expiring, expired)",
    labelNames: ["identity", "state"],
    registers: [registry],
    collect() {
      this.reset();
      const now = new Date();
      for (const id of identities()) {
        const s = id.status(now).state;
        for (const st of STATES) this.set({ identity: id.name, state: st }, s === st ? 1 : 0);
      }
    },
  });
  return {
    registry,
    issued: new Counter({
      name: "meshvault_agent_certs_issued_total",
      help: "Certificates obtained from the CA, by how the agent authenticated",
      labelNames: ["identity", "via"],
      registers: [registry],
    }),
    failures: new Counter({
      name: "meshvault_agent_renewal_failures_total",
      help: "Failed attempts to obtain a certificate",
      labelNames: ["identity"],
      registers: [registry],
    }),
  };
}
