// Does the token hold, on every path the mode calls, the capability the call needs?

import type { VaultClient } from "../client.js";
import { policySnippet, type PathAccess } from "../setup/access.js";
import type { CheckReport } from "./report.js";

export async function checkCapabilities(
  client: VaultClient,
  token: string,
  access: readonly PathAccess[],
  policies: readonly string[],
  setupHint: string,
  r: CheckReport,
  signal?: AbortSignal,
): Promise<Set<string>> {
  const paths = access.map((a) => a.path);
  let data: Record<string, unknown>;
  try {
    const res = await client.write<Record<string, unknown>>(
      "sys/capabilities-self",
      { paths },
      { token, signal },
    );
    data = res?.data ?? {};
  } catch (e) {
    r.fail(
      `cannot ask sys/capabilities-self what the token may do (${(e as Error).message})`,
      "use a token that may call sys/capabilities-self (the default policy allows it)",
    );
    return new Set();
  }
  const lacking = new Set<string>();
  const named = policies.filter((p) => p !== "default" && p !== "root");
  for (const a of access) {
    const caps = Array.isArray(data[a.path]) ? (data[a.path] as string[]) : [];
    const missing = caps.includes("root") ? [] : a.capabilities.filter((c) => !caps.includes(c));
    const need = a.capabilities.join("/");
    if (missing.length === 0) {
      r.ok(`${need} on ${a.path}: ${a.why}`);
    } else if (a.unauthenticated) {
      r.ok(
        `${need} on ${a.path}: ${a.why} (not in the token's policies, but Vault serves it without a token)`,
      );
    } else {
      lacking.add(a.path);
      r.fail(
        `the token lacks "${missing.join(", ")}" on ${a.path}, needed to ${a.why} (it has: ${caps.join(", ") || "nothing"})`,
        `add ${policySnippet({ path: a.path, capabilities: a.capabilities })} to ${
          named.length ? `one of the token's policies (${named.join(", ")})` : "a policy of the token"
        }, or run ${setupHint}`,
      );
    }
  }
  return lacking;
}
