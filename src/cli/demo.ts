// `meshvault demo`: runs seed 000's sleep -> httpbin proof on this machine and
// exits 0 only when all three outcomes hold.
import type { Command } from "commander";
import { demoAuthority, localAuthority, type DemoAuthorityProvider } from "../demo/authority-hook.js";
import { runDemo } from "../demo/run.js";
import { createLogger, silentLogger } from "../log/logger.js";
import { KEY_ALGORITHMS, type KeyAlgorithm } from "../pki/keys.js";
import { UsageError } from "./errors.js";

interface DemoFlags {
  vault?: boolean;
  authority?: string;
  keyAlgorithm?: string;
  trustDomain?: string;
  keep?: boolean;
  logLevel?: string;
}

/**
 * Vault-backed providers live in src/demo/vault.ts (owned by the Vault work); that module calls
 * registerDemoAuthority({ name: "vault", ... }) when imported. Loaded lazily so the demo works
 * without it.
 */
async function loadOptionalProviders(): Promise<void> {
  const modules = ["../demo/vault.js"];
  for (const m of modules) {
    try {
      await import(m);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ERR_MODULE_NOT_FOUND") throw err;
    }
  }
}

async function chooseAuthority(f: DemoFlags): Promise<DemoAuthorityProvider> {
  await loadOptionalProviders();
  const wanted = f.authority ?? (f.vault ? "vault" : undefined);
  if (wanted) {
    const p = demoAuthority(wanted);
    if (!p)
      throw new Error(
        `demo authority ${JSON.stringify(wanted)} is not available in this build; use --authority local (the default)`,
      );
    if (!(await p.available()))
      throw new Error(
        `demo authority ${wanted} needs tools that are not installed (for vault: \`bao\` or \`vault\` on PATH; scripts/ensure-openbao.sh installs bao)`,
      );
    return p;
  }
  // Like the seed: use a real Vault when one is at hand, the embedded CA otherwise.
  const vault = demoAuthority("vault");
  if (vault && (await vault.available())) return vault;
  return localAuthority;
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
    .action(async (f: DemoFlags) => {
      // Ctrl-C: exit through process.exit so "exit" hooks remove the temp dir and stop the dev Vault.
      const interrupted = (): never => process.exit(130);
      process.once("SIGINT", interrupted);
      process.once("SIGTERM", interrupted);
      if (f.keyAlgorithm && !(KEY_ALGORITHMS as readonly string[]).includes(f.keyAlgorithm))
        throw new UsageError(`--key-algorithm ${f.keyAlgorithm}: use one of ${KEY_ALGORITHMS.join(", ")}`);
      const result = await runDemo({
        authority: await chooseAuthority(f),
        ...(f.keyAlgorithm ? { keyAlgorithm: f.keyAlgorithm as KeyAlgorithm } : {}),
        ...(f.trustDomain ? { trustDomain: f.trustDomain } : {}),
        keepDir: f.keep ?? false,
        logger: f.logLevel
          ? createLogger({ level: f.logLevel, format: "pretty", name: "demo" })
          : silentLogger(),
      });
      process.exitCode = result.ok ? 0 : 1;
    });
}
