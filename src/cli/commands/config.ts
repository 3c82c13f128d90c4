// `meshvault config validate`: the declaration (flags, help); the schemas load only when it runs.
import type { Command } from "commander";

export function registerConfigCommands(program: Command): void {
  const config = program.command("config").description("work with meshvault configuration files");
  config
    .command("validate")
    .description(
      "check a server or agent YAML file against the schema (unknown fields, types, durations, names) without starting anything; exit 0 valid, 2 invalid",
    )
    .requiredOption("-c, --config <file>", "the YAML file to check")
    .option("--kind <kind>", "server or agent (default: agent when the file lists identities)")
    .action(async (f: { config: string; kind?: string }) =>
      (await import("../config-validate.js")).runConfigValidate(f),
    );
}
