// `meshvault config validate -c FILE`: checks a server or agent configuration against the
// same schemas the commands use, without starting anything. Exit 0 valid, 2 invalid.
import type { Command } from "commander";
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

export function registerConfigCommands(program: Command): void {
  const config = program.command("config").description("work with meshvault configuration files");
  config
    .command("validate")
    .description(
      "check a server or agent YAML file against the schema (unknown fields, types, durations, names) without starting anything; exit 0 valid, 2 invalid",
    )
    .requiredOption("-c, --config <file>", "the YAML file to check")
    .option("--kind <kind>", "server or agent (default: agent when the file lists identities)")
    .action((f: { config: string; kind?: string }) => {
      if (f.kind !== undefined && f.kind !== "server" && f.kind !== "agent")
        throw new UsageError(`--kind ${JSON.stringify(f.kind)}: use server or agent`);
      process.stdout.write(`${validateConfigFile(f.config, f.kind as ConfigKind | undefined)}\n`);
    });
}
