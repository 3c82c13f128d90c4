// `meshvault verify`: do these clusters, servers, files and agents trust each other?
// Reads every source's trust bundle(s) and sample chains, prints the matrix, the
// differences and what to fix; exit 0 only when every source trusts every other.
import type { Command } from "commander";
import { buildTrustMatrix, formatTrustReport } from "../verify/matrix.js";
import { parseSourceSpec, readSource, SourceSpecError } from "../verify/sources.js";
import { parseDuration } from "../config/duration.js";

interface VerifyFlags {
  output: string;
  timeout: string;
}

export function registerVerifyCommand(program: Command): void {
  program
    .command("verify")
    .description(
      "check that CA servers, clusters, files and agents trust each other: roots, a trust matrix, what to fix",
    )
    .argument(
      "<sources...>",
      "[name=]ca:http://host:port[,grpc=host:port,token=FILE] | file:PATH | kube:CONTEXT[,ns=NS,cacerts=NS/NAME,kubeconfig=FILE] | sds:SOCKET",
    )
    .option("-o, --output <format>", "text or json", "text")
    .option("--timeout <duration>", "per-source timeout for network reads", "10s")
    .action(async (sources: string[], f: VerifyFlags) => {
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
    });
}
