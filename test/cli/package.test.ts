// The package as users get it: `npm pack` (which builds dist/), `npm install -g` of the tarball
// into a temp prefix (runtime dependencies only, from the registry through npm's cache), then the
// installed `meshvault` binary. One install per run.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { REPO } from "../helpers/cli.js";

const run = promisify(execFile);
const npm = process.platform === "win32" ? "npm.cmd" : "npm";

let tmp: string;
let prefix: string;
let tarball: string;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), "meshvault-package-"));
  prefix = join(tmp, "prefix");
  const { stdout } = await run(npm, ["pack", "--json", "--pack-destination", tmp], {
    cwd: REPO,
    maxBuffer: 64 << 20,
  });
  const [info] = JSON.parse(stdout.slice(stdout.indexOf("["))) as {
    filename: string;
    files: { path: string }[];
  }[];
  tarball = join(tmp, info!.filename);
  packed = info!.files.map((f) => f.path);
  await run(npm, ["install", "-g", "--prefix", prefix, "--no-audit", "--no-fund", tarball], {
    cwd: tmp,
    maxBuffer: 64 << 20,
  });
});

after(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

let packed: string[] = [];

test("npm pack ships bin, the built dist, proto, deploy and the README, not src or tests", () => {
  for (const f of [
    "bin/meshvault.js",
    "dist/cli/main.js",
    "proto/istio/v1/auth/ca.proto",
    "README.md",
    "package.json",
  ])
    assert.ok(packed.includes(f), `${f} in the tarball`);
  assert.ok(
    packed.some((f) => f.startsWith("deploy/")),
    "deploy/ in the tarball",
  );
  for (const f of packed) assert.doesNotMatch(f, /^(src|test|bench|scripts)\/|\.map$|tsbuildinfo/, f);
});

test("the global install has only runtime dependencies and every import in dist/ resolves from them", async () => {
  const pkgDir = join(prefix, "lib", "node_modules", "meshvault");
  const pkg = JSON.parse(await readFile(join(REPO, "package.json"), "utf8")) as {
    dependencies: Record<string, string>;
    devDependencies: Record<string, string>;
  };
  const installed = readdirSync(join(pkgDir, "node_modules")).flatMap((d) =>
    d.startsWith("@") ? readdirSync(join(pkgDir, "node_modules", d)).map((s) => `${d}/${s}`) : [d],
  );
  // @types/* may come in through a runtime dependency (protobufjs depends on @types/node).
  for (const dev of Object.keys(pkg.devDependencies).filter((d) => !d.startsWith("@types/")))
    assert.ok(!installed.includes(dev), `devDependency ${dev} not installed`);
  // Import every module of dist/ from the installed copy: a dev-only or missing import fails here.
  const { stdout } = await run(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { readdirSync } from "node:fs";
       const root = ${JSON.stringify(join(pkgDir, "dist"))};
       const files = readdirSync(root, { recursive: true }).filter((f) => f.endsWith(".js"));
       // A worker's entry module runs as a worker (it needs parentPort) and says it is ready.
       const { Worker } = await import("node:worker_threads");
       for (const f of files)
         if (!f.endsWith("-worker.js")) await import(root + "/" + f);
         else
           await new Promise((resolve, reject) => {
             const w = new Worker(root + "/" + f, { execArgv: [] });
             w.once("message", () => w.terminate().then(resolve));
             w.once("error", reject);
           });
       console.log(files.length);`,
    ],
    { cwd: tmp },
  );
  assert.ok(Number(stdout) > 50, `imported ${stdout.trim()} modules`);
});

test("installed `meshvault --version` prints package.json's version", async () => {
  const { version } = JSON.parse(await readFile(join(REPO, "package.json"), "utf8")) as { version: string };
  const { stdout } = await run(join(prefix, "bin", "meshvault"), ["--version"], { cwd: tmp });
  assert.equal(stdout.trim(), version);
});

test("installed `meshvault demo` proves the three outcomes and exits 0", async () => {
  const { stdout } = await run(join(prefix, "bin", "meshvault"), ["demo", "--authority", "local"], {
    cwd: tmp,
    timeout: 120_000,
  });
  assert.match(stdout, /HTTP 200/);
  assert.match(stdout, /all three outcomes hold/);
});

test("bin/meshvault.js without dist/ says to build first and exits 1", async () => {
  const copy = join(tmp, "unbuilt");
  await mkdir(join(copy, "bin"), { recursive: true });
  await copyFile(join(REPO, "bin", "meshvault.js"), join(copy, "bin", "meshvault.js"));
  await copyFile(join(REPO, "package.json"), join(copy, "package.json"));
  assert.ok(!existsSync(join(copy, "dist")));
  const r = spawnSync(process.execPath, [join(copy, "bin", "meshvault.js"), "--version"], {
    encoding: "utf8",
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /meshvault is not built: .*dist\/cli\/main\.js does not exist/);
  assert.match(r.stderr, /npm run build/);
  assert.doesNotMatch(r.stderr, /ERR_MODULE_NOT_FOUND|at /);
});
