// `meshvault config validate -c FILE` runs (declared in commands/config.ts): checks a server or
// agent configuration against the same schemas the commands use, without starting anything.
// Exit 0 valid, 2 invalid.
import { readConfigFile, loadServerConfig } from "../config/load.js";
import { parseAgentConfig } from "../agent/config.js";
import { UsageError } from "./errors.js";

export type ConfigKind = "server" | "agent";

/** Agent files list identities; server files never do. */
export function detectKind(tree: Record<string, unknown>): ConfigKind {
  return "identities" in tree ? "agent" : "server";
}

/** Validates `file`; returns the summary line, throws ConfigError / AgentConfigError. */
export function validateConfigFile(file: string, kind?: ConfigKind): string {
  const tree = readConfigFile(file);
  const k = kind ?? detectKind(tree);
  if (k === "agent") {
    const c = parseAgentConfig(tree, file);
    return `${file}: valid agent configuration (${c.identities.length} ${c.identities.length === 1 ? "identity" : "identities"}, CA ${c.ca.address}, trust domain ${c.trustDomain})`;
  }
  // The environment must not leak into a file check: only the file is validated.
  const c = loadServerConfig({ file, env: {} });
  return `${file}: valid server configuration (authority ${c.authority.type}, trust domain ${c.trustDomain}${c.kubernetes ? ", kubernetes" : ""}${c.vault ? ", vault" : ""})`;
}

export function runConfigValidate(f: { config: string; kind?: string }): void {
  if (f.kind !== undefined && f.kind !== "server" && f.kind !== "agent")
    throw new UsageError(`--kind ${JSON.stringify(f.kind)}: use server or agent`);
  process.stdout.write(`${validateConfigFile(f.config, f.kind as ConfigKind | undefined)}\n`);
}
