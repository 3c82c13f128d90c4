// `meshvault server`: the declaration (flags, help); the CA server loads only when it runs.
import type { Command } from "commander";

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
    .action(async (flags: ServerFlags) => (await import("../server.js")).runServerCommand(flags));
}
