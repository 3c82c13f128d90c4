// `meshvault agent` runs (declared in commands/agent.ts): the workload side of istio-agent.
// One identity from flags (sidecar), or many from a YAML file (node agent); flags override the
// file's top-level fields. Istio's environment variables are honoured as defaults.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type * as Yaml from "yaml";
import {
  AgentConfigError,
  identityName,
  parseAgentConfig,
  startAgent,
  type AgentConfig,
} from "../agent/index.js";
import { DEFAULT_SDS_SOCKET, DEFAULT_TOKEN_FILE } from "../agent/defaults.js";
import { readCredentialFiles } from "../agent/file-output.js";
import { createLogger, type Logger } from "../log/logger.js";
import { fsReason } from "../fs/errors.js";
import { UsageError } from "./errors.js";
import { logOptionsFromFlags } from "./log-flags.js";
import { closeOnSignal } from "./shutdown.js";
import type { AgentFlags } from "./commands/agent.js";

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

export async function runAgentCommand(flags: AgentFlags): Promise<void> {
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
