// `meshvault vault check`: diagnose, for the configured mode, everything
// between meshvault and a working Vault: address, TLS, seal, login,
// capabilities on every path the mode calls, PKI / KV state.

import { VaultClient } from "../client.js";
import type { VaultConnection } from "../config.js";
import { serverAccess, type VaultAuthorityConfig } from "../setup/access.js";
import { checkCapabilities } from "./capabilities.js";
import { checkLogin, checkReachable } from "./connection.js";
import { checkPkiState } from "./pki.js";
import { CheckReport } from "./report.js";

export { CheckReport, type CheckLine } from "./report.js";

export interface CheckOptions {
  connection: VaultConnection;
  authority: VaultAuthorityConfig;
  trustDomain: string;
  /** The setup command to suggest in fixes, e.g. "meshvault vault setup -c server.yaml". */
  setupHint?: string;
  out?: (line: string) => void;
  /** Attempts per request; 1 by default so a dead Vault fails fast. */
  maxAttempts?: number;
  /**
   * Cancels the check: the request in flight (whichever step) ends at once, and the check ends
   * with a line saying it was cancelled (`cancelled` in the result).
   */
  signal?: AbortSignal;
  /** Deadline of each Vault request; default 10 s. */
  timeoutMs?: number;
}

export interface CheckResult {
  exitCode: number;
  lines: CheckReport["lines"];
  /** The signal ended the check before it was complete. */
  cancelled?: boolean;
}

export async function runCheck(opts: CheckOptions): Promise<CheckResult> {
  const out = opts.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  const signal = opts.signal;
  const r = new CheckReport(out, signal);
  const hint = opts.setupHint ?? `meshvault vault setup --mode ${opts.authority.type}`;
  const conn = opts.connection;
  out(
    `meshvault vault check: mode ${opts.authority.type}, Vault at ${conn.address}${conn.namespace ? `, namespace ${conn.namespace}` : ""}`,
  );
  let client: VaultClient;
  try {
    client = new VaultClient(conn, {
      retry: { maxAttempts: opts.maxAttempts ?? 1 },
      timeoutMs: opts.timeoutMs ?? 10_000,
    });
  } catch (e) {
    r.fail(
      `cannot use the Vault settings: ${(e as Error).message}`,
      "fix VAULT_ADDR / VAULT_CACERT / the vault: section",
    );
    return { exitCode: r.finish(), lines: r.lines };
  }
  try {
    if (await checkReachable(client, conn, r, signal)) {
      const login = await checkLogin(client, conn, r, signal);
      if (login) {
        const lacking = await checkCapabilities(
          client,
          login.token,
          serverAccess(opts.authority),
          login.policies,
          hint,
          r,
          signal,
        );
        await checkPkiState(client, login.token, opts.authority, opts.trustDomain, hint, r, lacking, signal);
      }
    }
  } catch (err) {
    if (!signal?.aborted) throw err;
    return { exitCode: r.cancelled(signal.reason), lines: r.lines, cancelled: true };
  } finally {
    client.close();
  }
  return { exitCode: r.finish(), lines: r.lines };
}
