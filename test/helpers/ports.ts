// A free loopback port for a test peer, and whether this machine has an IPv6 loopback at all.
//
// The port is free when freePort() returns, and the peer binds it a moment later (up to a second
// or two for a process that has to start). Test files run in parallel processes, and another
// file's freePort() could be given the same port in that window; each port handed out is
// therefore claimed for a minute in a directory every test process shares (O_EXCL create), and
// a port another process claimed is skipped.
import { closeSync, mkdirSync, openSync, statSync, unlinkSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const CLAIMS = join(tmpdir(), "meshvault-test-ports");
const CLAIM_MS = 60_000;
const ATTEMPTS = 20;

function bindEphemeral(): Promise<number> {
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

/** True when this process now holds the claim on `port` (none, or only an expired one, existed). */
function claim(port: number): boolean {
  const file = join(CLAIMS, String(port));
  for (let i = 0; i < 2; i++) {
    try {
      closeSync(openSync(file, "wx"));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      try {
        if (Date.now() - statSync(file).mtimeMs < CLAIM_MS) return false;
        unlinkSync(file); // expired: take it over
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
  }
  return false;
}

/** `ephemeral` (the kernel's choice of a free port) is replaced only by the ports test. */
export async function freePort(ephemeral: () => Promise<number> = bindEphemeral): Promise<number> {
  mkdirSync(CLAIMS, { recursive: true });
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const port = await ephemeral();
    if (claim(port)) return port;
  }
  throw new Error(`freePort: ${ATTEMPTS} ports in a row were claimed by other test processes (${CLAIMS})`);
}

/** A port held by a listener of this process (for "port in use" cases); close() frees it. */
export async function busyPort(host = "127.0.0.1"): Promise<{ port: number; close(): void }> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once("error", reject);
    s.listen(0, host, () => resolve());
  });
  return { port: (s.address() as { port: number }).port, close: () => void s.close() };
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
