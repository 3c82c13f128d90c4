// `meshvault verify` runs (declared in commands/verify.ts): do these clusters, servers, files
// and agents trust each other? Reads every source's trust bundle(s) and sample chains, prints
// the matrix, the differences and what to fix; exit 0 only when every source trusts every other.
import { buildTrustMatrix, formatTrustReport } from "../verify/matrix.js";
import { parseSourceSpec, readSource, SourceSpecError } from "../verify/sources.js";
import { parseDuration } from "../config/duration.js";
import type { VerifyFlags } from "./commands/verify.js";

export async function runVerifyCommand(sources: string[], f: VerifyFlags): Promise<void> {
  if (f.output !== "text" && f.output !== "json") {
    process.stderr.write(`meshvault verify: -o ${f.output}: expected text or json\n`);
    process.exit(2);
  }
  let specs;
  try {
    specs = sources.map(parseSourceSpec);
  } catch (err) {
    if (!(err instanceof SourceSpecError)) throw err;
    process.stderr.write(`meshvault verify: ${err.message}\n`);
    process.exit(2);
  }
  const names = new Set<string>();
  for (const s of specs) {
    if (names.has(s.name)) {
      process.stderr.write(
        `meshvault verify: two sources are named "${s.name}": name them, e.g. A=${s.text}\n`,
      );
      process.exit(2);
    }
    names.add(s.name);
  }
  const timeoutMs = parseDuration(f.timeout) * 1000;
  const readings = await Promise.all(specs.map((s) => readSource(s, { timeoutMs })));
  const report = buildTrustMatrix(readings);
  process.stdout.write(
    f.output === "json" ? `${JSON.stringify(report, null, 2)}\n` : formatTrustReport(report),
  );
  process.exitCode = report.ok ? 0 : 1;
}
