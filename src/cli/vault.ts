// `meshvault vault setup` and `meshvault vault check` run (declared in commands/vault.ts):
// thin wiring of src/vault/setup and src/vault/check.
import { loadServerConfig } from "../config/load.js";
import type { ServerConfig } from "../config/schema.js";
import { vaultConnectionFromConfig, type VaultSection } from "../config/vault-schema.js";
import { runCheck } from "../vault/check/index.js";
import { resolveAuthority, runSetup } from "../vault/setup/index.js";
import type { CheckCliFlags, SetupCliFlags } from "./commands/vault.js";
import { exitCodeFor, UsageError } from "./errors.js";
import { closeOnSignal } from "./shutdown.js";

function loadConfig(file: string | undefined): ServerConfig | undefined {
  return file ? loadServerConfig({ file }) : undefined;
}

export async function runVaultSetup(flags: SetupCliFlags): Promise<void> {
  try {
    const config = loadConfig(flags.config);
    const report = await runSetup({
      flags,
      config,
      address: flags.address,
      dryRun: flags.dryRun === true,
      warn: (m) => process.stderr.write(`meshvault: ${m}\n`),
    });
    process.exitCode = report?.failed ? 1 : 0;
  } catch (err) {
    process.stderr.write(`meshvault vault setup: ${(err as Error).message}\n`);
    process.exitCode = exitCodeFor(err);
  }
}

export async function runVaultCheck(flags: CheckCliFlags): Promise<void> {
  try {
    const config = loadConfig(flags.config);
    const authority = resolveAuthority(flags, config);
    const section: VaultSection = { ...(config?.vault ?? {}) };
    if (flags.address) section.address = flags.address;
    const auth = checkAuthFromFlags(flags);
    if (auth) section.auth = auth;
    if (!section.auth && (process.env.VAULT_TOKEN || process.env.BAO_TOKEN))
      process.stderr.write(
        `meshvault: ${flags.config ? `${flags.config} sets no vault.auth` : "no -c config and no --auth"}: checking with VAULT_TOKEN / BAO_TOKEN from this shell, which is what the server does only if its environment holds the same token\n`,
      );
    const connection = vaultConnectionFromConfig(section, process.env, {
      warn: (m) => process.stderr.write(`meshvault: ${m}\n`),
    });
    const setupHint = flags.config
      ? `meshvault vault setup -c ${flags.config}`
      : `meshvault vault setup --mode ${authority.type}`;
    // SIGINT/SIGTERM cancels the request in flight (a Vault that accepts and never answers); the
    // check then says it was cancelled and exits 1. A second signal exits at once.
    const cancel = new AbortController();
    let checking: Promise<unknown> | undefined;
    const stopListening = closeOnSignal({
      log: {
        info: () => undefined,
        error: (_fields, msg) => process.stderr.write(`meshvault vault check: ${msg}\n`),
      },
      close: async (signal) => {
        cancel.abort(new Error(`interrupted by ${signal}`));
        await checking;
      },
      exit: (code) => {
        if (code !== 0) process.exit(code);
      },
    });
    try {
      const run = runCheck({
        connection,
        authority,
        trustDomain: flags.trustDomain ?? config?.trustDomain ?? "cluster.local",
        setupHint,
        signal: cancel.signal,
      });
      checking = run.catch(() => undefined);
      process.exitCode = (await run).exitCode;
    } finally {
      stopListening();
    }
  } catch (err) {
    process.stderr.write(`meshvault vault check: ${(err as Error).message}\n`);
    process.exitCode = exitCodeFor(err);
  }
}

function checkAuthFromFlags(f: CheckCliFlags): VaultSection["auth"] {
  switch (f.auth) {
    case undefined:
      return undefined;
    case "token":
      return { method: "token", ...(f.authTokenFile ? { tokenFile: f.authTokenFile } : {}) };
    case "approle":
      return {
        method: "approle",
        mount: f.authMount ?? "approle",
        ...(f.roleIdFile ? { roleIdFile: f.roleIdFile } : {}),
        ...(f.secretIdFile ? { secretIdFile: f.secretIdFile } : {}),
      };
    case "kubernetes":
      return {
        method: "kubernetes",
        mount: f.authMount ?? "kubernetes",
        role: f.authRole ?? "meshvault",
        ...(f.authTokenFile ? { tokenFile: f.authTokenFile } : {}),
      };
    case "jwt":
      if (!f.authTokenFile) throw new UsageError("--auth jwt needs --auth-token-file <file holding the JWT>");
      return {
        method: "jwt",
        mount: f.authMount ?? "jwt",
        role: f.authRole ?? "meshvault",
        tokenFile: f.authTokenFile,
      };
    default:
      throw new UsageError(`--auth ${f.auth} is not supported: use token, approle, kubernetes or jwt`);
  }
}
