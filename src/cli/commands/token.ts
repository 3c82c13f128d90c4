// `meshvault token`: the declaration (flags, help); the local issuer loads only when it runs.
import type { Command } from "commander";

export interface TokenFlags {
  namespace: string;
  serviceAccount: string;
  trustDomain: string;
  dataDir: string;
  audience: string[];
  ttl: string;
  out?: string;
}

export function registerTokenCommands(program: Command): void {
  const token = program
    .command("token")
    .description("tokens from meshvault's local issuer (no Kubernetes needed)");
  token
    .command("create")
    .description("mint a token that the server (same --data-dir) accepts for namespace/service-account")
    .requiredOption("-n, --namespace <ns>", "the workload's namespace")
    .requiredOption("-s, --service-account <sa>", "the workload's service account")
    .option("--trust-domain <domain>", "trust domain of the server", "cluster.local")
    .option("--data-dir <dir>", "the server's data directory", "./.meshvault")
    .option("--audience <aud...>", "token audiences", ["istio-ca"])
    .option("--ttl <duration>", "token lifetime", "12h")
    .option("-o, --out <file>", "write the token to this file (0600) instead of stdout")
    .action(async (f: TokenFlags) => (await import("../token.js")).runTokenCreate(f));
}
