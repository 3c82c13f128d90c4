// `meshvault agent`: the declaration (flags, help). The agent's modules load only when it runs:
// a sidecar pays for what it runs, and `agent --help` for none of it.
import type { Command } from "commander";
import { DEFAULT_SDS_SOCKET, DEFAULT_TOKEN_FILE } from "../../agent/defaults.js";
import { collect } from "./repeatable.js";

export interface AgentFlags {
  config?: string;
  caAddress?: string;
  caRootCert?: string;
  caServerName?: string;
  clusterId?: string;
  caHeader?: string[];
  trustDomain?: string;
  namespace?: string;
  serviceAccount?: string;
  spiffeId?: string;
  tokenFile?: string;
  keyAlgorithm?: string;
  certTtl?: string;
  graceRatio?: string;
  sdsSocket?: string;
  sds: boolean;
  outDir?: string;
  exec?: string;
  statusListen?: string;
  logLevel?: string;
  logFormat?: string;
  once?: boolean;
}

export function registerAgentCommand(program: Command): void {
  program
    .command("agent")
    .description(
      "obtain and rotate workload certificates from the CA (Istio CA API) and serve them to Envoy over SDS and/or as files",
    )
    .option("-c, --config <file>", "node agent: YAML file listing identities (each with its own token file)")
    .option("--ca-address <host:port>", "the CA's gRPC address (env CA_ADDR; default localhost:15012)")
    .option(
      "--ca-root-cert <file>",
      "roots that sign the CA's TLS certificate (env CA_ROOT_CA; default ./var/run/secrets/istio/root-cert.pem)",
    )
    .option(
      "--ca-server-name <name>",
      "TLS name to verify on the CA's certificate, e.g. istiod.istio-system.svc",
    )
    .option("--cluster-id <id>", "sent as the clusterid header (env ISTIO_META_CLUSTER_ID)")
    .option(
      "--ca-header <name=value>",
      "extra header for CA calls, repeatable (env CA_HEADER_<NAME>)",
      collect,
    )
    .option("--trust-domain <domain>", "trust domain (default cluster.local)")
    .option(
      "-n, --namespace <ns>",
      "the workload's namespace (env POD_NAMESPACE); with --service-account, the identity to expect",
    )
    .option("-s, --service-account <sa>", "the workload's service account (env SERVICE_ACCOUNT)")
    .option("--spiffe-id <id>", "the SPIFFE ID to expect, instead of --namespace/--service-account")
    .option(
      "--token-file <file>",
      `projected service-account token, re-read on every call (default ${DEFAULT_TOKEN_FILE})`,
    )
    .option("--key-algorithm <alg>", "rsa-2048 (default, like istio-agent), ec-p256 or ec-p384")
    .option("--cert-ttl <duration>", "certificate lifetime to request (env SECRET_TTL; default 24h)")
    .option("--grace-ratio <ratio>", "renew when this fraction of the lifetime is left (default 0.5)")
    .option("--sds-socket <path>", `Envoy SDS Unix socket (default ${DEFAULT_SDS_SOCKET})`)
    .option("--no-sds", "do not serve SDS (files only)")
    .option("--out-dir <dir>", "also write cert-chain.pem, key.pem (0600), root-cert.pem here")
    .option("--exec <command>", "shell command to run after each rotation")
    .option("--status-listen <host:port>", "serve /healthz, /_status and /metrics here")
    .option(
      "--once",
      "get each certificate once, write it to --out-dir, exit 0 (1 when it fails); implies --no-sds",
    )
    .option("--log-level <level>", "trace, debug, info, warn, error (default info)")
    .option("--log-format <format>", "json or pretty (default: pretty on a terminal, else json)")
    .action(async (flags: AgentFlags) => (await import("../agent.js")).runAgentCommand(flags));
}
