// The plain-HTTP side port: liveness, readiness, status, the trust bundle, Prometheus metrics.
import { createServer, type RequestListener, type Server } from "node:http";
import type { Authority, Readiness } from "../authority/authority.js";
import type { CaMetrics } from "./metrics.js";
import { buildOverview, IssuanceHistory, type OverviewSource } from "./overview.js";
import { renderStatusPage } from "./status-page.js";
import { closeWithGrace } from "../timing/grace.js";
import type { Log } from "../log/logger.js";
import { listenOnEveryAddress } from "../net/listen.js";

export interface HttpOptions {
  address: string;
  authority: Authority;
  metrics: CaMetrics;
  /** What /readyz says: the authority started, can sign now, and the gRPC API serves. */
  readiness(): Readiness;
  /** The /_status document (JSON). */
  status(): Record<string, unknown>;
  /** What the status page (GET /) and GET /overview show beyond readiness. */
  page?: Pick<OverviewSource, "trustDomain" | "vaultAddress" | "servingChainPem">;
  /** The root rotation this server follows, as JSON on /rotation. */
  rotation?: () => unknown;
  /** How long close() lets requests in flight finish before it closes their connections. */
  shutdownGraceMs: number;
  log: Pick<Log, "warn">;
  /** The addresses of a listen host name (net/listen.ts); default the system resolver. */
  resolveHost?: (host: string) => Promise<string[]>;
}

export interface HttpServer {
  /** One per address the listen host resolves to. */
  servers: Server[];
  port: number;
  /**
   * Stops accepting, lets requests in flight finish for the grace period, then closes every
   * connection left (one whose request never ends: Node's close() waits for it). Calling it
   * again returns the same close.
   */
  close(): Promise<{ forced: boolean }>;
}

/** /readyz's body: the reason when not ready, what it signs with and until when otherwise. */
export function readinessText(r: Readiness): string {
  if (!r.ready) return `not ready: ${r.reason}\n`;
  const parts = [r.detail, r.until ? `valid until ${r.until.toISOString()}` : undefined].filter(Boolean);
  return parts.length ? `ready: ${parts.join(", ")}\n` : "ready\n";
}

export async function startHttp(o: HttpOptions): Promise<HttpServer> {
  const history = new IssuanceHistory(o.metrics);
  const overviewSource: OverviewSource = {
    authority: o.authority,
    metrics: o.metrics,
    trustDomain: o.page?.trustDomain ?? "",
    ...(o.page?.vaultAddress ? { vaultAddress: o.page.vaultAddress } : {}),
    servingChainPem: () => o.page?.servingChainPem(),
    // What /readyz answers.
    readiness: () => {
      const r = o.readiness();
      return r.ready ? { ready: true } : { ready: false, reason: r.reason };
    },
  };
  const handle: RequestListener = (req, res) => {
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
        const r = o.readiness();
        return send(r.ready ? 200 : 503, readinessText(r));
      }
      case "/_status":
        return send(200, `${JSON.stringify(o.status(), null, 2)}\n`, "application/json");
      case "/roots": {
        const roots = o.authority.trustBundle();
        if (roots.length === 0) return send(503, "no trust bundle yet\n");
        return send(200, roots.join(""), "application/x-pem-file");
      }
      case "/rotation":
        if (!o.rotation) return send(404, "no root rotation on this server (authority passed in)\n");
        return send(200, `${JSON.stringify(o.rotation(), null, 2)}\n`, "application/json");
      case "/metrics":
        o.metrics.registry.metrics().then(
          (text) => send(200, text, o.metrics.registry.contentType),
          (err: Error) => send(500, `metrics: ${err.message}\n`),
        );
        return;
      case "/":
      case "/overview":
        buildOverview(overviewSource, history).then(
          (ov) =>
            path === "/"
              ? send(200, renderStatusPage(ov), "text/html; charset=utf-8")
              : send(200, `${JSON.stringify(ov, null, 2)}\n`, "application/json"),
          (err: Error) => send(500, `status: ${err.message}\n`),
        );
        return;
      default:
        return send(
          404,
          "not found: try /, /overview, /healthz, /readyz, /_status, /roots, /rotation or /metrics\n",
        );
    }
  };
  let listening: { servers: Server[]; port: number };
  try {
    listening = await listenOnEveryAddress({
      address: o.address,
      what: "HTTP",
      create: () => createServer(handle),
      log: o.log,
      ...(o.resolveHost ? { resolve: o.resolveHost } : {}),
    });
  } catch (err) {
    history.stop();
    throw err;
  }
  const { servers, port } = listening;
  let closing: Promise<{ forced: boolean }> | undefined;
  return {
    servers,
    port,
    close: () =>
      (closing ??= closeWithGrace({
        graceful: (done) => {
          let open = servers.length;
          for (const server of servers) server.close(() => --open === 0 && done());
        },
        force: () => {
          for (const server of servers) server.closeAllConnections();
        },
        graceMs: o.shutdownGraceMs,
      }).finally(() => history.stop())),
  };
}
