// Builds the server configuration from, in rising precedence: defaults, the YAML
// file, MESHVAULT_* environment variables, command-line flags.
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { ConfigError, formatIssues } from "./issues.js";
import { serverConfigSchema, type ServerConfig } from "./schema.js";

export { ConfigError, formatIssues };
import { fsReason } from "../fs/errors.js";

/** Environment variables the server reads, and the config field each sets. */
export const ENV_FIELDS: Record<string, string> = {
  MESHVAULT_TRUST_DOMAIN: "trustDomain",
  MESHVAULT_DATA_DIR: "dataDir",
  MESHVAULT_GRPC_LISTEN: "listen.grpc",
  MESHVAULT_HTTP_LISTEN: "listen.http",
  MESHVAULT_LOG_LEVEL: "log.level",
  MESHVAULT_LOG_FORMAT: "log.format",
  MESHVAULT_AUTHORITY: "authority.type",
  MESHVAULT_WORKERS: "workers",
  MESHVAULT_GRPC_SERVER: "grpcServer",
};

type Tree = Record<string, unknown>;

export function setPath(tree: Tree, path: string, value: unknown): void {
  const keys = path.split(".");
  let node = tree;
  for (const k of keys.slice(0, -1)) {
    if (typeof node[k] !== "object" || node[k] === null) node[k] = {};
    node = node[k] as Tree;
  }
  node[keys.at(-1)!] = value;
}

export interface LoadOptions {
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Dotted paths from flags, e.g. {"trustDomain": "example.org"}. */
  overrides?: Record<string, unknown>;
}

export function readConfigFile(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError(
      `cannot read config file ${file} (-c/--config or MESHVAULT_CONFIG): ${fsReason(err)}`,
    );
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid YAML: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc))
    throw new ConfigError(`config file ${file} must hold a YAML mapping`);
  return doc as Tree;
}

export function loadServerConfig(opts: LoadOptions = {}): ServerConfig {
  const env = opts.env ?? process.env;
  const file = opts.file ?? env.MESHVAULT_CONFIG;
  const tree: Tree = file ? readConfigFile(file) : {};
  for (const [name, path] of Object.entries(ENV_FIELDS)) {
    const v = env[name];
    if (v !== undefined && v !== "") setPath(tree, path, v);
  }
  for (const [path, v] of Object.entries(opts.overrides ?? {})) if (v !== undefined) setPath(tree, path, v);
  const result = serverConfigSchema.safeParse(tree);
  if (!result.success)
    throw new ConfigError(
      formatIssues(result.error, file ?? "defaults, environment and flags", "server", {
        schema: serverConfigSchema,
        input: tree,
      }),
    );
  return result.data;
}
