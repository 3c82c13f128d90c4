// A free loopback port for a test peer (the peer binds it right after; a rare race is retried by
// callers), and whether this machine has an IPv6 loopback at all.
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

/** Whether this machine can bind ::1 (detected: a container may have no IPv6 loopback). */
export async function ipv6Loopback(): Promise<boolean> {
  const s = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      s.once("error", reject);
      s.listen(0, "::1", () => resolve());
    });
    return true;
  } catch {
    return false;
  } finally {
    s.close();
  }
}
