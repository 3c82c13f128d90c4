// zlint (github.com/zmap/zlint/v3), the certificate linter public CAs run before issuing,
// built by scripts/ensure-zlint.sh (wrapper module in test/zlint-peer/): an independent
// judge of the certificate profile we issue.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileP = promisify(execFile);
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

let binary: Promise<string> | undefined;
/** The zlint binary, building it on first use. */
export function zlintBinary(): Promise<string> {
  binary ??= (async () => {
    const script = join(repoRoot, "scripts", "ensure-zlint.sh");
    try {
      const { stdout } = await execFileP("bash", [script, "--print-dir"], { cwd: repoRoot });
      const dir = stdout.trim().split("\n").pop();
      if (!dir) throw new Error("ensure-zlint.sh printed no directory");
      return join(dir, "zlint");
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`building zlint failed: ${e.message}\n${e.stderr ?? ""}`, { cause: err });
    }
  })();
  return binary;
}

export interface LintFinding {
  lint: string;
  result: "warn" | "error" | "fatal";
  details?: string;
}

/** Every warn/error/fatal zlint reports for each PEM certificate, in input order. */
export async function zlint(pems: readonly string[], args: readonly string[] = []): Promise<LintFinding[][]> {
  const bin = await zlintBinary();
  const dir = mkdtempSync(join(tmpdir(), "meshvault-zlint-"));
  try {
    const out: LintFinding[][] = [];
    for (const [i, pem] of pems.entries()) {
      const file = join(dir, `${i}.pem`);
      writeFileSync(file, pem);
      const { stdout } = await execFileP(bin, [...args, file]);
      const report = JSON.parse(stdout) as Record<string, { result: string; details?: string }>;
      out.push(
        Object.entries(report)
          .filter(([, r]) => r.result === "warn" || r.result === "error" || r.result === "fatal")
          .map(([lint, r]) => ({
            lint,
            result: r.result as LintFinding["result"],
            ...(r.details ? { details: r.details } : {}),
          })),
      );
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
