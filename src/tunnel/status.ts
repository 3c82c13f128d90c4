// The tunnel's HTTP status port: /_status (JSON), /_metrics and /metrics (Prometheus), /healthz.
import { createServer, type RequestListener } from "node:http";
import type { TunnelMetrics } from "./metrics.js";
import { closeServers, listenOnEveryAddress } from "../net/listen.js";
import type { Log } from "../log/logger.js";

export interface StatusServer {
  port: number;
  close(): Promise<void>;
}

export async function startStatusServer(
  address: string,
  status: () => { ready: boolean } & Record<string, unknown>,
  metrics: TunnelMetrics,
  log: Pick<Log, "warn">,
  resolveHost?: (host: string) => Promise<string[]>,
): Promise<StatusServer> {
  const handle: RequestListener = (req, res) => {
    const p = (req.url ?? "/").split("?")[0];
    const send = (code: number, body: string, type = "text/plain; charset=utf-8"): void => {
      res.writeHead(code, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (p === "/_status") {
      const s = status();
      return send(s.ready ? 200 : 503, `${JSON.stringify(s, null, 2)}\n`, "application/json");
    }
    if (p === "/healthz") return send(status().ready ? 200 : 503, status().ready ? "ok\n" : "not ready\n");
    if (p === "/_metrics" || p === "/metrics") {
      metrics.registry.metrics().then(
        (t) => send(200, t, metrics.registry.contentType),
        (e: Error) => send(500, `metrics: ${e.message}\n`),
      );
      return;
    }
    send(404, "not found: try /_status, /_metrics or /healthz\n");
  };
  const { servers, port } = await listenOnEveryAddress({
    address,
    what: "the status port (--status)",
    create: () => createServer(handle),
    log,
    ...(resolveHost ? { resolve: resolveHost } : {}),
  });
  return {
    port,
    close: () => {
      for (const s of servers) s.closeAllConnections();
      return closeServers(servers);
    },
  };
}
