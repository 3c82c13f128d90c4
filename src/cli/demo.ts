// `meshvault demo` runs (declared in commands/demo.ts): seed 000's sleep -> httpbin proof on
// this machine, exit 0 only when all three outcomes hold.
import { demoAuthority, localAuthority, type DemoAuthorityProvider } from "../demo/authority-hook.js";
import { runDemo } from "../demo/run.js";
import { createLogger, silentLogger } from "../log/logger.js";
import { KEY_ALGORITHMS, type KeyAlgorithm } from "../pki/keys.js";
import type { DemoFlags } from "./commands/demo.js";
import { UsageError } from "./errors.js";

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

export async function runDemoCommand(f: DemoFlags): Promise<void> {
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
    logger: f.logLevel ? createLogger({ level: f.logLevel, format: "pretty", name: "demo" }) : silentLogger(),
  });
  process.exitCode = result.ok ? 0 : 1;
}
