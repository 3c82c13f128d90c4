// The `meshvault` command: thin wiring of the modules below it.
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { registerServerCommand } from "./server.js";
import { registerCaCertsCommand } from "./cacerts.js";
import { registerTokenCommands } from "./token.js";
import { registerCertCommands } from "./inspect.js";
import { registerVaultCommands } from "./vault.js";
import { registerAgentCommand } from "./agent.js";
import { registerTunnelCommand } from "./tunnel.js";
import { registerDemoCommand } from "./demo.js";

export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

export function buildProgram(): Command {
  const program = new Command("meshvault")
    .description("Vault (or OpenBao) as the root of trust for a service mesh's mTLS identities")
    .version(version(), "-v, --version", "print the version")
    .showHelpAfterError()
    .exitOverride();
  registerServerCommand(program);
  registerCaCertsCommand(program);
  registerCertCommands(program);
  registerTokenCommands(program);
  registerVaultCommands(program);
  registerAgentCommand(program);
  registerTunnelCommand(program);
  registerDemoCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  // `meshvault ... | head` closes the pipe early: that is not an error worth a stack trace.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode);
    process.stderr.write(`meshvault: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
