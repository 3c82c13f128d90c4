// `meshvault server` runs: the CA server, configured by file, MESHVAULT_* env and flags
// (declared in commands/server.ts).
import { loadServerConfig } from "../config/load.js";
import { startCaServer } from "../server/run.js";
import type { ServerFlags } from "./commands/server.js";
import { exitCodeFor } from "./errors.js";
import { closeOnSignal } from "./shutdown.js";

/** Flags map onto config fields; flags win over env and file. */
export function flagOverrides(f: ServerFlags): Record<string, unknown> {
  const o: Record<string, unknown> = {
    trustDomain: f.trustDomain,
    dataDir: f.dataDir,
    "listen.grpc": f.grpcListen,
    "listen.http": f.httpListen,
    "log.level": f.logLevel,
    "log.format": f.logFormat,
  };
  if (f.authority) o["authority.type"] = f.authority;
  if (f.filesDir) o["authority.dir"] = f.filesDir;
  if (f.workers !== undefined) o["workers"] = f.workers;
  return o;
}

export async function runServerCommand(flags: ServerFlags): Promise<void> {
  const config = loadServerConfig({
    ...(flags.config ? { file: flags.config } : {}),
    overrides: flagOverrides(flags),
  });
  // startCaServer returns once the ports are bound, before any Vault answer: the signal
  // handlers are in place while the authority starts. Anything Vault or the network can
  // fix later keeps the server up, not ready, retrying (see /readyz); what only the
  // operator can fix ends it as if found at once.
  const server = await startCaServer(config);
  closeOnSignal({ log: server.log, close: () => server.close() });
  server.started.catch((err: unknown) => {
    process.stderr.write(`meshvault: ${(err as Error).message}\n`);
    void server.close().finally(() => process.exit(exitCodeFor(err)));
  });
}
