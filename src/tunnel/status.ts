// The tunnel's HTTP status port: /_status (JSON), /_metrics and /metrics (Prometheus), /healthz.
import { createServer, type Server } from "node:http";
import { TunnelFlagError } from "./flag-error.js";
import type { TunnelMetrics } from "./metrics.js";

export interface StatusServer {
  port: number;
  close(): Promise<void>;
}

export function splitHostPort(address: string, what: string): { host: string; port: number } {
  const i = address.lastIndexOf(":");
  const port = Number(address.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new TunnelFlagError(`${what} ${JSON.stringify(address)} is not host:port (e.g. 127.0.0.1:8443)`);
  return { host: address.slice(0, i).replace(/^\[|\]$/g, "") || "0.0.0.0", port };
}

export async function startStatusServer(
  address: string,
  status: () => { ready: boolean } & Record<string, unknown>,
  metrics: TunnelMetrics,
): Promise<StatusServer> {
  const server: Server = createServer((req, res) => {
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
  });
  const { host, port } = splitHostPort(address, "--status");
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e) =>
      reject(new Error(`cannot listen on ${address} for the status port: ${e.message}`)),
    );
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  return {
    port: typeof a === "object" && a ? a.port : port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
