// Runs a plan. --dry-run prints each step's vault commands and touches
// nothing (no client exists then). A real run checks each step, applies only
// what differs, and reports one line per step plus a change count.

import type { VaultClient } from "../client.js";
import { StepContext, type SetupStep } from "./step.js";

export type StepOutcome = "unchanged" | "created" | "updated" | "failed";

export interface StepReport {
  title: string;
  outcome: StepOutcome;
  detail?: string | undefined;
  notes: string[];
  error?: string | undefined;
}

export interface RunReport {
  steps: StepReport[];
  changes: number;
  failed: boolean;
}

const LABEL: Record<StepOutcome, string> = {
  unchanged: "ok (unchanged)",
  created: "created",
  updated: "updated",
  failed: "FAIL",
};

export function printDryRun(steps: readonly SetupStep[], out: (line: string) => void): void {
  out("# meshvault vault setup --dry-run: the equivalent vault CLI commands (nothing was sent to Vault).");
  out("# A real run reads Vault first and skips what is already in place; so does this script for");
  out("# mounts and auth methods (a dev server already has secret/). Replay: bash -e this-file");
  out("set -e");
  for (const s of steps) {
    out("");
    out(`# ${s.title}`);
    for (const c of s.commands) out(c);
  }
}

export async function executePlan(
  steps: readonly SetupStep[],
  client: VaultClient,
  out: (line: string) => void,
): Promise<RunReport> {
  const ctx = new StepContext(client);
  const reports: StepReport[] = [];
  let changes = 0;
  for (const step of steps) {
    let report: StepReport;
    try {
      const current = await step.check(ctx);
      if (current.state === "ok") {
        report = {
          title: step.title,
          outcome: "unchanged",
          detail: current.detail,
          notes: current.notes ?? [],
        };
      } else {
        const applied = (await step.apply(ctx, current)) ?? {};
        changes++;
        report = {
          title: step.title,
          outcome: current.state === "missing" ? "created" : "updated",
          detail: current.state === "differs" ? current.detail : applied.detail,
          notes: applied.notes ?? [],
        };
      }
    } catch (e) {
      report = { title: step.title, outcome: "failed", notes: [], error: (e as Error).message };
    }
    reports.push(report);
    const detail = report.detail ? `: ${report.detail}` : "";
    out(`${LABEL[report.outcome].padEnd(15)} ${report.title}${detail}`);
    for (const n of report.notes) out(`${" ".repeat(16)}${n}`);
    if (report.outcome === "failed") {
      out(`${" ".repeat(16)}${report.error}`);
      // Later steps build on this one: stop rather than pile up follow-on errors.
      out(`stopped after a failure; ${changes} change${changes === 1 ? "" : "s"} made before it.`);
      return { steps: reports, changes, failed: true };
    }
  }
  out(changes === 0 ? "nothing to change" : `${changes} change${changes === 1 ? "" : "s"}`);
  return { steps: reports, changes, failed: false };
}
