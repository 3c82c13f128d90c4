// `meshvault status`: the declaration (flags, help); the client loads only when it runs.
import type { Command } from "commander";

export function registerStatusCommand(program: Command): void {
  program
    .command("status")
    .description(
      "show a running server (authority, readiness and reason, chain with expiries, Vault, issuance) or agent (identities, expiry, next rotation, outputs); exit 1 when not ready",
    )
    .argument("[address]", "the server's HTTP port or the agent's --status-listen (default 127.0.0.1:15014)")
    .option("-c, --config <file>", "server config: use its listen.http")
    .option("-o, --output <format>", "table, json or yaml", "table")
    .action(async (address: string | undefined, f: { config?: string; output: string }) =>
      (await import("../status.js")).runStatusCommand(address, f),
    );
}
