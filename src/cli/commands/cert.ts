// `meshvault cert`: the declaration (flags, help); the inspector loads only when it runs.
import type { Command } from "commander";

/** Adds `cert inspect <file|-> [--roots file] [--json]` to the CLI. */
export function registerCertCommands(program: Command): Command {
  const cert = program.command("cert").description("work with certificates");
  cert
    .command("inspect")
    .description(
      "show subject, SPIFFE ID, SANs, issuer, validity and time left, key type for each certificate in a PEM file, and verify the chain (exit 1 when it fails)",
    )
    .argument("<file>", 'PEM (or DER) certificate file, leaf first; "-" reads stdin')
    .option("--roots <file>", "PEM file of trusted roots (default: the self-signed certificates in <file>)")
    .option("--json", "print the report as JSON")
    .action(async (file: string, o: { roots?: string; json?: boolean }) =>
      (await import("../inspect.js")).runCertInspectCommand(file, o),
    );
  return cert;
}
