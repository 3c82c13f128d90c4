// `meshvault demo`: the declaration (flags, help); the demo's servers, agents and tunnels load
// only when it runs (../demo.ts).
import type { Command } from "commander";

export interface DemoFlags {
  vault?: boolean;
  authority?: string;
  keyAlgorithm?: string;
  trustDomain?: string;
  keep?: boolean;
  logLevel?: string;
}

export function registerDemoCommand(program: Command): void {
  program
    .command("demo")
    .description(
      "one-command proof on loopback: CA, agents and tunnels for sleep and httpbin; sleep -> httpbin over mTLS = 200, plaintext fails, a third identity is refused",
    )
    .option(
      "--vault",
      "sign with a dev Vault/OpenBao configured like seed 000 (default when bao/vault is on PATH)",
    )
    .option("--authority <name>", "local (embedded CA) or vault")
    .option("--key-algorithm <alg>", "workload key type: rsa-2048 (default), ec-p256, ec-p384")
    .option("--trust-domain <domain>", "trust domain (default cluster.local)")
    .option("--keep", "keep the temp directory with tokens, certificates and sockets")
    .option("--log-level <level>", "show component logs on stderr at this level (default: silent)")
    .action(async (f: DemoFlags) => (await import("../demo.js")).runDemoCommand(f));
}
