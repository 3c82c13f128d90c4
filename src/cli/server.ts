// `meshvault server`: the CA server, configured by file, MESHVAULT_* env and flags.
import type { Command } from "commander";
import { loadServerConfig } from "../config/load.js";
import { startCaServer } from "../server/run.js";
import { exitCodeFor } from "./errors.js";
import { closeOnSignal } from "./shutdown.js";

export interface ServerFlags {
  config?: string;
  trustDomain?: string;
  dataDir?: string;
  grpcListen?: string;
  httpListen?: string;
  authority?: string;
  filesDir?: string;
  workers?: string;
  logLevel?: string;
  logFormat?: string;
}

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

export function registerServerCommand(program: Command): void {
  program
    .command("server")
    .description(
      "run the certificate authority: Istio's CA gRPC API over TLS, signing with the configured authority",
    )
    .option("-c, --config <file>", "YAML configuration file (also MESHVAULT_CONFIG)")
    .option("--trust-domain <domain>", "SPIFFE trust domain (default cluster.local)")
    .option(
      "--data-dir <dir>",
      "where the local CA, token issuer and trust bundle live (default ./.meshvault)",
    )
    .option("--grpc-listen <host:port>", "address of the Istio CA gRPC API (default 127.0.0.1:15012)")
    .option(
      "--http-listen <host:port>",
      "address of /healthz, /readyz, /_status, /roots, /metrics (default 127.0.0.1:15014)",
    )
    .option("--authority <type>", "signing backend: local, files, vault-sign, vault-kv, vault-intermediate")
    .option("--files-dir <dir>", "with --authority files: the Istio plug-in CA directory")
    .option(
      "--workers <n>",
      "threads that verify CSRs and sign certificates (default: one per core; 0 = main thread only)",
    )
    .option("--log-level <level>", "trace, debug, info, warn, error (default info)")
    .option("--log-format <format>", "json or pretty (default: pretty on a terminal, else json)")
    .action(async (flags: ServerFlags) => {
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
    });
}
