// `--version`, `--help`, `<command> --help` and `completion` answer from the commands'
// declarations alone: what each loads is recorded by a loader hook in the real CLI process
// (test/helpers/module-log/), so a declaration that starts importing its implementation again
// (the server, Vault, Kubernetes, gRPC, pino: about a second of CPU) fails here, not in a
// timing. The numbers are in docs/benchmarks.md ("CLI start-up").
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { cliSync, type CliResult } from "../helpers/cli.js";

const dir = mkdtempSync(join(tmpdir(), "meshvault-startup-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const REGISTER = pathToFileURL(join(import.meta.dirname, "..", "helpers", "module-log", "register.mjs")).href;

/** Runs the CLI with `args`; returns its result and every module it loaded (URLs and paths). */
function loaded(args: string[]): CliResult & { modules: string[] } {
  const log = join(dir, `${args.join("_").replace(/\W/g, "")}.log`);
  const r = cliSync(args, {
    MESHVAULT_MODULE_LOG: log,
    NODE_OPTIONS: `${process.env["NODE_OPTIONS"] ?? ""} --import ${REGISTER}`.trim(),
  });
  return { ...r, modules: readFileSync(log, "utf8").split("\n").filter(Boolean) };
}

/** The npm packages among `modules`, without tsx's own (the suite may run the CLI from source). */
function packages(modules: string[]): string[] {
  const names = modules.flatMap((m) =>
    m.includes("/node_modules/.cache/meshvault-test-cli/")
      ? []
      : (/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(m)?.[1] ?? []),
  );
  return [...new Set(names)].filter(
    (p) => !["tsx", "esbuild", "get-tsconfig", "resolve-pkg-maps"].includes(p),
  );
}

/** meshvault's own modules among `modules`, as paths below src/ or dist/ without extension ("cli/main"). */
function own(modules: string[]): string[] {
  return modules.flatMap((m) =>
    // npm test runs the CLI from its build copy under node_modules/.cache (scripts/test.sh).
    ((u) => (u.includes("/node_modules/") ? [] : (/\/(?:src|dist)\/(.+)\.[jt]s$/.exec(u)?.[1] ?? [])))(
      m.replace("/node_modules/.cache/meshvault-test-cli/", "/"),
    ),
  );
}

// What only running a command needs: servers, clients, authorities, the agent itself.
const RUN_ONLY =
  /^(server|vault|kube|authority|tunnel|rotation|demo|identity|verify|config|log|agent\/(?!defaults$))/;

for (const args of [
  ["--help"],
  ["server", "--help"],
  ["agent", "--help"],
  ["vault", "setup", "--help"],
  ["completion", "bash"],
])
  test(`\`meshvault ${args.join(" ")}\` loads commander and the declarations, no command's implementation`, () => {
    const r = loaded(args);
    assert.equal(r.code, 0, r.err);
    const mine = own(r.modules);
    // The recorder saw the CLI: its entry point and the declaration of the command asked for.
    const declaration = `cli/commands/${args[0] === "--help" ? "server" : args[0]!}`;
    assert.ok(
      mine.includes("cli/main") && mine.includes(declaration),
      `${declaration} not in ${mine.slice(0, 20).join(" ")}`,
    );
    assert.deepEqual(packages(r.modules), ["commander"]);
    assert.deepEqual(
      mine.filter((m) => RUN_ONLY.test(m)),
      [],
    );
  });

test("`meshvault --version` loads neither commander nor any declaration", () => {
  const r = loaded(["--version"]);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, `${JSON.parse(readFileSync("package.json", "utf8")).version}\n`);
  assert.deepEqual(own(r.modules), ["cli/main"]);
  assert.deepEqual(packages(r.modules), []);
});

test("`meshvault -v extra` still goes through commander (only the bare flag is answered early)", () => {
  const r = loaded(["-v", "server"]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^\d+\.\d+\.\d+\n$/);
  assert.ok(packages(r.modules).includes("commander"));
});
