// ACL policies: written verbatim, compared byte for byte on re-runs.

import type { PolicySpec } from "../spec.js";
import type { SetupStep } from "../step.js";

export function policyStep(p: PolicySpec, who: string): SetupStep {
  return {
    title: `policy ${p.name} for ${who} (${p.access.length} paths)`,
    commands: [`vault policy write ${p.name} - <<'EOF'\n${p.text}EOF`],
    async check(ctx) {
      const r = await ctx.client.read<{ policy?: string }>(`sys/policies/acl/${p.name}`);
      const have = r?.data?.policy;
      if (have === undefined) return { state: "missing" };
      return have.trim() === p.text.trim()
        ? { state: "ok" }
        : { state: "differs", detail: "policy text differs" };
    },
    async apply(ctx) {
      await ctx.client.request("PUT", `sys/policies/acl/${p.name}`, { policy: p.text });
    },
  };
}
