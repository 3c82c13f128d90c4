// Prometheus metrics for one tunnel (own registry: the demo runs several tunnels in one process).
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";

export type ConnectionResult =
  "accepted" | "denied" | "handshake_error" | "target_error" | "server_identity_error";

export interface TunnelMetrics {
  registry: Registry;
  connections: Counter<"result">;
  open: Gauge;
  bytes: Counter<"direction">;
  reloads: Counter;
  certExpiry: Gauge;
}

export function createTunnelMetrics(withDefaults = false): TunnelMetrics {
  const registry = new Registry();
  if (withDefaults) collectDefaultMetrics({ register: registry });
  return {
    registry,
    connections: new Counter({
      name: "meshvault_tunnel_connections_total",
      help: "Connections by outcome: accepted, denied (SPIFFE ID not allowed), handshake_error, target_error, server_identity_error",
      labelNames: ["result"],
      registers: [registry],
    }),
    open: new Gauge({
      name: "meshvault_tunnel_open_connections",
      help: "Connections currently being forwarded",
      registers: [registry],
    }),
    bytes: new Counter({
      name: "meshvault_tunnel_bytes_total",
      help: "Bytes forwarded; direction is 'in' (from the accepted side) or 'out' (towards it)",
      labelNames: ["direction"],
      registers: [registry],
    }),
    reloads: new Counter({
      name: "meshvault_tunnel_certificate_reloads_total",
      help: "Times new certificates were loaded without restarting",
      registers: [registry],
    }),
    certExpiry: new Gauge({
      name: "meshvault_tunnel_cert_expiry_seconds",
      help: "Unix time at which the tunnel's own certificate expires",
      registers: [registry],
    }),
  };
}
