// A free loopback port for a test peer (the peer binds it right after; a rare race is retried by callers).
import { createServer } from "node:net";

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      if (addr === null || typeof addr === "string") {
        srv.close();
        rej(new Error("no port"));
        return;
      }
      srv.close(() => res(addr.port));
    });
  });
}
