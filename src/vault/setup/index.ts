// `meshvault vault setup`: config + flags -> plan -> dry-run print or checked apply.

import type { ServerConfig } from "../../config/schema.js";
import { VaultClient } from "../client.js";
import { vaultConnectionFromEnv, type Env, type VaultConnection } from "../config.js";
import { executePlan, printDryRun, type RunReport } from "./executor.js";
import { buildPlan } from "./plan.js";
import { resolveSetup, SetupConfigError, type SetupFlags } from "./resolve.js";
import type { SetupSpec } from "./spec.js";
import { fmtTtl } from "./step.js";

export * from "./access.js";
export * from "./executor.js";
export * from "./plan.js";
export * from "./resolve.js";
export type * from "./spec.js";
export * from "./step.js";

export interface SetupRunOptions {
  flags: SetupFlags;
  config?: ServerConfig | undefined;
  /** Vault address flag (wins over config and env). */
  address?: string | undefined;
  dryRun?: boolean;
  env?: Env;
  out?: (line: string) => void;
  warn?: (line: string) => void;
}

/**
 * The connection setup uses: address and TLS from flags / config / env, but
 * always an admin token from VAULT_TOKEN / BAO_TOKEN, never the server's own
 * least-privilege login (which cannot write policies or mounts).
 */
export function adminConnection(
  opts: Pick<SetupRunOptions, "config" | "address" | "env" | "warn">,
): VaultConnection {
  const env = opts.env ?? process.env;
  const s = opts.config?.vault;
  return vaultConnectionFromEnv(
    env,
    {
      address: opts.address ?? s?.address,
      caCert: s?.caCert,
      caPath: s?.caPath,
      clientCert: s?.clientCert,
      clientKey: s?.clientKey,
      tlsServerName: s?.tlsServerName,
      namespace: s?.namespace,
      skipVerify: s?.skipVerify,
      auth: { method: "token", token: env["BAO_TOKEN"] || env["VAULT_TOKEN"] || undefined },
    },
    opts.warn ? { warn: opts.warn } : {},
  );
}

function summary(spec: SetupSpec): string {
  const a = spec.authority;
  const what =
    a.type === "vault-sign"
      ? `sign at ${a.mount}/sign/${a.role}, identity ${a.identity}`
      : a.type === "vault-kv"
        ? `CA from ${a.certificate}`
        : `intermediate (${a.mode}) from ${a.rootMount}/root/sign-intermediate, ttl ${fmtTtl(a.ttl)}`;
  return `mode ${a.type} (${what}), trust domain ${spec.trustDomain}`;
}

/** Run setup; returns the report (undefined for --dry-run). Throws SetupConfigError for bad flags/config. */
export async function runSetup(opts: SetupRunOptions): Promise<RunReport | undefined> {
  const out = opts.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  const connection = adminConnection(opts);
  const spec = resolveSetup(opts.flags, { vaultAddress: connection.address, config: opts.config });
  const steps = buildPlan(spec);
  if (opts.dryRun) {
    printDryRun(steps, out);
    return undefined;
  }
  if (connection.auth.method !== "token" || !connection.auth.token) {
    throw new SetupConfigError(
      `vault setup needs an admin token: set VAULT_TOKEN (or BAO_TOKEN) to a token that may mount engines and write policies and auth roles (the root token of a fresh Vault)`,
    );
  }
  const client = new VaultClient(connection, { token: connection.auth.token });
  try {
    out(`meshvault vault setup: ${summary(spec)}, Vault at ${connection.address}`);
    const report = await executePlan(steps, client, out);
    if (!report.failed) {
      for (const line of nextSteps(spec)) out(line);
    }
    return report;
  } finally {
    client.close();
  }
}

function nextSteps(spec: SetupSpec): string[] {
  if (spec.serverAuth) return [];
  return [
    `note: no auth method was set up for the server (--auth approle|kubernetes|jwt). To use a token instead:`,
    `  vault token create -policy=${spec.policy.name} -period=24h`,
  ];
}
