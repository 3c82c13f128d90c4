// A tiny httpbin-like app for the demo: /get, /headers, /status/<code>, /ip.
import { createServer, type IncomingMessage, type Server } from "node:http";

export interface HttpbinApp {
  port: number;
  close(): Promise<void>;
}

function headersOf(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < req.rawHeaders.length; i += 2) out[req.rawHeaders[i]!] = req.rawHeaders[i + 1]!;
  return out;
}

export async function startHttpbin(host = "127.0.0.1", port = 0): Promise<HttpbinApp> {
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://httpbin");
    const json = (code: number, body: unknown): void => {
      res.writeHead(code, { "content-type": "application/json" });
      res.end(`${JSON.stringify(body, null, 2)}\n`);
    };
    const status = /^\/status\/(\d{3})$/.exec(url.pathname);
    if (status) {
      res.writeHead(Number(status[1]));
      res.end();
      return;
    }
    switch (url.pathname) {
      case "/headers":
        return json(200, { headers: headersOf(req) });
      case "/get":
        return json(200, {
          args: Object.fromEntries(url.searchParams),
          headers: headersOf(req),
          origin: req.socket.remoteAddress,
          url: url.toString(),
        });
      case "/ip":
        return json(200, { origin: req.socket.remoteAddress });
      default:
        return json(404, { error: "try /get, /headers, /ip or /status/<code>" });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === "object" && addr ? addr.port : port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
