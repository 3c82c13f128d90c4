// `meshvault <args>` in a child process, exactly as a user runs it: from source with tsx, or,
// when MESHVAULT_TEST_CLI names a directory holding a build (dist/, package.json, proto/), from
// that build. npm test makes one (scripts/test.sh): a built CLI starts with about a third of
// tsx's CPU, and the suite starts a few hundred. A copy, not dist/ itself: the package test's
// `npm pack` rebuilds dist/ while other tests run.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

/** The repository root: the child's working directory. */
export const REPO = join(import.meta.dirname, "..", "..");

export interface CliResult {
  code: number | null;
  out: string;
  err: string;
}

/** Node's arguments for running the CLI with `args`. */
function nodeArgs(args: string[]): string[] {
  const built = process.env["MESHVAULT_TEST_CLI"];
  return built ? builtCliNodeArgs(built, args) : ["--import", "tsx", ...mainArgs("./src/cli/main.ts", args)];
}

/** Node's arguments for running the CLI from the build in `dir` (its dist/cli/main.js) with `args`. */
export function builtCliNodeArgs(dir: string, args: string[]): string[] {
  return mainArgs(pathToFileURL(join(dir, "dist", "cli", "main.js")).href, args);
}

function mainArgs(main: string, args: string[]): string[] {
  return [
    "-e",
    `import(${JSON.stringify(main)}).then((m) => m.main(["node", "meshvault", ...${JSON.stringify(args)}]))`,
  ];
}

/** Runs to completion (killed after 30 s); `env` is added to this process's environment. */
export function cliSync(args: string[], env: Record<string, string> = {}): CliResult {
  const r = spawnSync(process.execPath, nodeArgs(args), {
    cwd: REPO,
    encoding: "utf8",
    env: { ...process.env, ...env },
    timeout: 30_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** Starts the CLI and leaves it running; `options` as for spawn (cwd is the repository). */
export function spawnCli(args: string[], options: SpawnOptions = {}): ChildProcess {
  return spawn(process.execPath, nodeArgs(args), { cwd: REPO, ...options });
}

/** Runs to completion, collecting output (killed after `timeoutMs`); `env` is the child's whole environment. */
export function cli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<CliResult> {
  const child = spawn(process.execPath, nodeArgs(args), {
    cwd: REPO,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stderr.setEncoding("utf8").on("data", (c: string) => (err += c));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  return new Promise((resolve) =>
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    }),
  );
}
