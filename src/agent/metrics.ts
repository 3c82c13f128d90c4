// Prometheus metrics for one agent; a registry per agent so that several agents
// (the demo, tests, benchmarks) can live in one process.
//
// prom-client is loaded on the first access to `registry` (the status port, a test), not when
// the agent starts: a sidecar without --status-listen has no way to be scraped, and loading
// prom-client costs ~2 MB RSS and ~35 ms of start (bench/agents.ts). Until then the two
// counters are plain numbers, copied into prom-client Counters at each collection.
import { createRequire } from "node:module";
import type * as PromClient from "prom-client";
import type { Registry } from "prom-client";
import type { WorkloadIdentity } from "./workload.js";
import type { CertState } from "./rotation.js";

const require = createRequire(import.meta.url);

const STATES: CertState[] = ["pending", "valid", "renewal-overdue", "expiring", "expired"];

/** A labelled counter that needs no metrics library until someone reads it. */
export class AgentCounter<L extends string> {
  private readonly series = new Map<string, { labels: Record<L, string>; value: number }>();

  inc(labels: Record<L, string>, value = 1): void {
    const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));
    const s = this.series.get(key);
    if (s) s.value += value;
    else this.series.set(key, { labels: { ...labels }, value });
  }

  /** Every labelled series and its value, in first-increment order. */
  values(): { labels: Record<L, string>; value: number }[] {
    return [...this.series.values()].map((s) => ({ labels: { ...s.labels }, value: s.value }));
  }
}

export interface AgentMetrics {
  /** The prom-client registry (loads prom-client on first access). */
  readonly registry: Registry;
  issued: AgentCounter<"identity" | "via">;
  failures: AgentCounter<"identity">;
}

export function createAgentMetrics(
  identities: () => Iterable<WorkloadIdentity>,
  withDefaults = false,
): AgentMetrics {
  const issued = new AgentCounter<"identity" | "via">();
  const failures = new AgentCounter<"identity">();
  let registry: Registry | undefined;

  const build = (): Registry => {
    const { Counter, Gauge, Registry, collectDefaultMetrics } = require("prom-client") as typeof PromClient;
    const r = new Registry();
    if (withDefaults) collectDefaultMetrics({ register: r });
    new Gauge({
      name: "meshvault_agent_cert_expiry_seconds",
      help: "Unix time at which the workload certificate currently served expires",
      labelNames: ["identity"],
      registers: [r],
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
      registers: [r],
      collect() {
        this.reset();
        const now = new Date();
        for (const id of identities()) {
          const s = id.status(now).state;
          for (const st of STATES) this.set({ identity: id.name, state: st }, s === st ? 1 : 0);
        }
      },
    });
    new Counter({
      name: "meshvault_agent_certs_issued_total",
      help: "Certificates obtained from the CA, by how the agent authenticated",
      labelNames: ["identity", "via"],
      registers: [r],
      collect() {
        this.reset();
        for (const s of issued.values()) this.inc(s.labels, s.value);
      },
    });
    new Counter({
      name: "meshvault_agent_renewal_failures_total",
      help: "Failed attempts to obtain a certificate",
      labelNames: ["identity"],
      registers: [r],
      collect() {
        this.reset();
        for (const s of failures.values()) this.inc(s.labels, s.value);
      },
    });
    return r;
  };
  // Default process metrics sample from the moment they are registered: register them now.
  if (withDefaults) registry = build();

  return {
    get registry(): Registry {
      return (registry ??= build());
    },
    issued,
    failures,
  };
}
