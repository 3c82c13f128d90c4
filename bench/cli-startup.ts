// How fast the built CLI answers what operators type without running anything (`--version`,
// `--help`, `<command> --help`, `completion`), next to an empty node process measured in the same
// run. CPU and peak RSS come from the child itself (process.resourceUsage() at exit, through an
// --import probe that the empty node process loads too); runs are interleaved so that a busy
// machine slows every row alike. test/cli/startup.test.ts checks what these load; this only measures.
//
//   npm run build && node --import tsx bench/cli-startup.ts      (BENCH_RUNS=9, about 10 s)
//   BENCH_CLI_BASELINE=/path/to/other/checkout ...   also that checkout's build, interleaved (before/after)
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fmt, percentile, table } from "./lib.js";

const RUNS = Number(process.env["BENCH_RUNS"] ?? 9);
const BASELINE = process.env["BENCH_CLI_BASELINE"];
const CASES = [["--version"], ["--help"], ["server", "--help"], ["agent", "--help"], ["completion", "bash"]];

interface Sample {
  userMs: number;
  sysMs: number;
  rssMb: number;
  wallMs: number;
}

const PROBE = `import { appendFileSync } from "node:fs";
import process from "node:process";
process.on("exit", () => {
  const u = process.resourceUsage();
  appendFileSync(process.env.MESHVAULT_BENCH_USAGE, JSON.stringify([u.userCPUTime, u.systemCPUTime, u.maxRSS]) + "\\n");
});
`;

function run(args: string[], probe: string, out: string): Sample {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ["--import", probe, ...args], {
    env: { ...process.env, MESHVAULT_BENCH_USAGE: out },
    stdio: ["ignore", "ignore", "pipe"],
    encoding: "utf8",
  });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`node ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  const lines = readFileSync(out, "utf8").trim().split("\n");
  const [user, sys, rss] = JSON.parse(lines.at(-1)!) as [number, number, number];
  return { userMs: user / 1000, sysMs: sys / 1000, rssMb: rss / 1024, wallMs };
}

function main(): void {
  if (!existsSync("dist/cli/main.js")) {
    process.stderr.write("bench/cli-startup.ts measures the built CLI: run `npm run build` first\n");
    process.exit(1);
  }
  const dir = mkdtempSync(join(tmpdir(), "meshvault-bench-cli-"));
  try {
    const probe = join(dir, "probe.mjs");
    writeFileSync(probe, PROBE);
    const out = join(dir, "usage.jsonl");
    const rows: { name: string; args: string[] }[] = [
      { name: "empty node (node -e 0)", args: ["-e", "0"] },
      ...CASES.flatMap((c) => [
        ...(BASELINE
          ? [
              {
                name: `baseline: meshvault ${c.join(" ")}`,
                args: [join(BASELINE, "bin", "meshvault.js"), ...c],
              },
            ]
          : []),
        { name: `meshvault ${c.join(" ")}`, args: ["bin/meshvault.js", ...c] },
      ]),
    ];
    const samples = new Map<string, Sample[]>(rows.map((r) => [r.name, []]));
    for (let i = 0; i < RUNS; i++) for (const r of rows) samples.get(r.name)!.push(run(r.args, probe, out));
    const med = (name: string, k: keyof Sample): number =>
      percentile(
        samples.get(name)!.map((s) => s[k]),
        50,
      );
    const base = rows[0]!.name;
    process.stdout.write(
      `CLI start-up: node ${process.version}, built CLI (bin/meshvault.js${BASELINE ? `; baseline ${BASELINE}` : ""}), median of ${RUNS} interleaved runs, load ${loadavg()
        .map((l) => l.toFixed(1))
        .join(" ")}\n\n`,
    );
    process.stdout.write(
      `${table([
        ["invocation", "user CPU", "above empty node", "sys CPU", "wall", "max RSS"],
        ...rows.map((r) => [
          r.name,
          `${fmt(med(r.name, "userMs"))} ms`,
          r.name === base ? "-" : `+${fmt(med(r.name, "userMs") - med(base, "userMs"))} ms`,
          `${fmt(med(r.name, "sysMs"))} ms`,
          `${fmt(med(r.name, "wallMs"))} ms`,
          `${fmt(med(r.name, "rssMb"), 1)} MB`,
        ]),
      ])}\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
