// The plain-HTTP side port: liveness, readiness, the trust bundle, Prometheus metrics.
import { createServer, type Server } from "node:http";
import type { Authority } from "../authority/authority.js";
import type { CaMetrics } from "./metrics.js";

export interface HttpOptions {
  address: string;
  authority: Authority;
  metrics: CaMetrics;
  /** True once the gRPC listener is up. */
  serving(): boolean;
}

export function splitHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(":");
  return {
    host: address.slice(0, i).replace(/^\[|\]$/g, "") || "0.0.0.0",
    port: Number(address.slice(i + 1)),
  };
}

export async function startHttp(o: HttpOptions): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, body: string, type = "text/plain; charset=utf-8"): void => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "method not allowed\n");
    switch (path) {
      case "/healthz":
        return send(200, "ok\n");
      case "/readyz": {
        const r = o.authority.ready();
        if (!r.ready) return send(503, `not ready: ${r.reason}\n`);
        if (!o.serving()) return send(503, "not ready: gRPC listener not started\n");
        return send(200, "ready\n");
      }
      case "/roots": {
        const roots = o.authority.trustBundle();
        if (roots.length === 0) return send(503, "no trust bundle yet\n");
        return send(200, roots.join(""), "application/x-pem-file");
      }
      case "/metrics":
        o.metrics.registry.metrics().then(
          (text) => send(200, text, o.metrics.registry.contentType),
          (err: Error) => send(500, `metrics: ${err.message}\n`),
        );
        return;
      default:
        return send(404, "not found: try /healthz, /readyz, /roots or /metrics\n");
    }
  });
  const { host, port } = splitHostPort(o.address);
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) =>
      reject(new Error(`cannot listen on ${o.address} for HTTP: ${err.message}`)),
    );
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  return { server, port: typeof addr === "object" && addr ? addr.port : port };
}
