// `meshvault agent`: the workload side of istio-agent. One identity from flags
// (sidecar), or many from a YAML file (node agent); flags override the file's
// top-level fields. Istio's environment variables are honoured as defaults.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type { Command } from "commander";
import type * as Yaml from "yaml";
import {
  AgentConfigError,
  identityName,
  parseAgentConfig,
  startAgent,
  DEFAULT_TOKEN_FILE,
  type AgentConfig,
} from "../agent/index.js";
import { readCredentialFiles } from "../agent/file-output.js";
import { DEFAULT_SDS_SOCKET } from "../agent/sds/index.js";
import { createLogger, type Logger } from "../log/logger.js";
import { fsReason } from "../fs/errors.js";
import { UsageError } from "./errors.js";
import { logOptionsFromFlags } from "./log-flags.js";
import { closeOnSignal } from "./shutdown.js";

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

type Tree = Record<string, unknown>;

// The YAML parser only for --config (node agent): a sidecar configured by flags does not load it
// (~1 MB RSS, ~40 ms; bench/agents.ts).
const require = createRequire(import.meta.url);
const parseYaml = (text: string): unknown => (require("yaml") as typeof Yaml).parse(text);

function readYaml(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new AgentConfigError(`cannot read agent config ${file} (-c/--config): ${fsReason(err)}`, {
      cause: err,
    });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new AgentConfigError(`agent config ${file} is not valid YAML: ${(err as Error).message}`);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc))
    throw new AgentConfigError(`agent config ${file} must hold a YAML mapping with an identities list`);
  return doc as Tree;
}

function headers(list: string[] | undefined, env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  // istio-agent sends every CA_HEADER_<NAME> environment variable as header <name>.
  for (const [k, v] of Object.entries(env))
    if (k.startsWith("CA_HEADER_") && v)
      out[k.slice("CA_HEADER_".length).toLowerCase().replace(/_/g, "-")] = v;
  for (const h of list ?? []) {
    const i = h.indexOf("=");
    if (i <= 0) throw new UsageError(`--ca-header ${JSON.stringify(h)} is not name=value`);
    out[h.slice(0, i).toLowerCase()] = h.slice(i + 1);
  }
  return out;
}

/** Builds the validated agent configuration from flags, Istio env and the optional file. */
export function agentConfigFromFlags(f: AgentFlags, env: NodeJS.ProcessEnv = process.env) {
  const tree: Tree = f.config ? readYaml(f.config) : {};
  const ca = { ...((tree.ca as Tree | undefined) ?? {}) };
  const set = (o: Tree, k: string, v: unknown): void => {
    if (v !== undefined && v !== "") o[k] = v;
  };
  set(ca, "address", f.caAddress ?? (tree.ca ? undefined : env.CA_ADDR));
  set(ca, "rootCertFile", f.caRootCert ?? (tree.ca ? undefined : env.CA_ROOT_CA));
  set(ca, "serverName", f.caServerName);
  set(ca, "clusterId", f.clusterId ?? env.ISTIO_META_CLUSTER_ID);
  const h = headers(f.caHeader, env);
  if (Object.keys(h).length) ca.headers = { ...((ca.headers as Tree | undefined) ?? {}), ...h };
  tree.ca = ca;
  set(tree, "trustDomain", f.trustDomain ?? (f.config ? undefined : env.TRUST_DOMAIN));
  set(
    tree,
    "keyAlgorithm",
    f.keyAlgorithm ?? (env.ECC_SIGNATURE_ALGORITHM === "ECDSA" ? "ec-p256" : undefined),
  );
  set(tree, "certTtl", f.certTtl ?? env.SECRET_TTL);
  set(tree, "graceRatio", f.graceRatio !== undefined ? Number(f.graceRatio) : undefined);
  set(tree, "statusListen", f.statusListen);
  if (!f.config) {
    // Sidecar shape: one identity from flags (and istio-agent's POD_NAMESPACE / SERVICE_ACCOUNT).
    const id: Tree = { tokenFile: f.tokenFile ?? DEFAULT_TOKEN_FILE };
    set(id, "namespace", f.namespace ?? env.POD_NAMESPACE);
    set(id, "serviceAccount", f.serviceAccount ?? env.SERVICE_ACCOUNT);
    set(id, "spiffeId", f.spiffeId);
    if (f.sds && !f.once) id.sdsSocket = f.sdsSocket ?? DEFAULT_SDS_SOCKET;
    set(id, "outDir", f.outDir);
    set(id, "exec", f.exec);
    tree.identities = [id];
  } else if (
    f.namespace ||
    f.serviceAccount ||
    f.tokenFile ||
    f.outDir ||
    f.sdsSocket ||
    f.exec ||
    f.spiffeId
  ) {
    throw new UsageError(
      "identity flags (--namespace, --service-account, --spiffe-id, --token-file, --sds-socket, --out-dir, --exec) apply without --config only; list identities in the config file instead",
    );
  }
  return parseAgentConfig(tree, f.config ?? "flags and environment");
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

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
    .action(async (flags: AgentFlags) => {
      const config = agentConfigFromFlags(flags);
      const log = createLogger(logOptionsFromFlags(flags, "meshvault-agent"));
      if (flags.once) return runOnce(config, log);
      // Process metrics only where they can be scraped: without a status port they would load
      // prom-client (~2 MB RSS) for nothing.
      const agent = await startAgent(config, {
        logger: log,
        processMetrics: config.statusListen !== undefined,
      });
      log.info(
        {
          ca: config.ca.address,
          identities: [...agent.identities.values()].map((m) => ({
            name: m.identity.name,
            sds: m.sds?.socketPath,
            outDir: m.config.outDir,
          })),
          ...(agent.statusPort !== undefined ? { statusPort: agent.statusPort } : {}),
        },
        "meshvault agent started",
      );
      process.on("SIGHUP", () => {
        log.info({ signal: "SIGHUP" }, "SIGHUP: renewing every identity now");
        agent.rotateAll().catch((err: Error) => log.warn({ err: err.message }, "forced renewal failed"));
      });
      // Rotation timers are unref'd so that library users can exit; the command itself must stay
      // up even with no socket or port open (files-only mode).
      const keepAlive = setInterval(() => undefined, 1 << 30);
      closeOnSignal({
        log,
        close: () => {
          clearInterval(keepAlive);
          return agent.close();
        },
      });
    });
}

/** `--once`: one certificate per identity into its files, then exit (init containers, scripts, the README). */
async function runOnce(config: AgentConfig, log: Logger): Promise<void> {
  const noFiles = config.identities.filter((i) => i.sdsSocket || !i.outDir);
  if (noFiles.length)
    throw new UsageError(
      `--once writes files and exits, without SDS: give each identity an outDir and no sdsSocket (${noFiles.map((i) => identityName(i)).join(", ")})`,
    );
  const agent = await startAgent({ ...config, statusListen: undefined }, { logger: log });
  try {
    const issued = await Promise.all([...agent.identities.values()].map((m) => m.identity.rotateNow()));
    for (const [i, m] of [...agent.identities.values()].entries()) {
      const dir = m.config.outDir!;
      // The agent logs a failed write and carries on; a one-shot run must fail instead.
      const written = await readCredentialFiles(dir).catch(() => undefined);
      if (written?.certChainPem !== m.identity.current()?.certChainPem)
        throw new Error(
          `${m.identity.name}: certificate issued but not written to ${dir} (see the log above)`,
        );
      process.stdout.write(
        `${m.identity.name}: ${issued[i]!.spiffeId} until ${issued[i]!.notAfter.toISOString()} -> ${m.config.outDir}\n`,
      );
    }
  } finally {
    await agent.close();
  }
}
