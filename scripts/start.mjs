// `npm start`: build dist/ incrementally (only what changed since the last build; the first
// build takes ~30 s on a small machine), say so, then run `meshvault server` with any extra
// arguments (`npm start -- --log-level debug`).
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const first = !existsSync(join(root, "dist", ".tsbuildinfo"));
process.stderr.write(
  first
    ? "npm start: compiling src/ to dist/ (first build, about 30 s; later starts recompile only what changed)...\n"
    : "npm start: recompiling what changed in src/ since the last build...\n",
);
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const started = Date.now();
const build = spawnSync(
  process.execPath,
  [tsc, "-p", "tsconfig.build.json", "--incremental", "--tsBuildInfoFile", "dist/.tsbuildinfo"],
  { cwd: root, stdio: "inherit" },
);
if (build.status !== 0) {
  process.stderr.write("npm start: the build failed (above); nothing was started\n");
  process.exit(build.status ?? 1);
}
process.stderr.write(
  `npm start: built in ${((Date.now() - started) / 1000).toFixed(1)} s; starting meshvault server\n`,
);
// The server gets the signals (Ctrl-C reaches both through the terminal's process group; a
// SIGTERM sent to npm is passed on), and npm start exits when it has shut down.
const child = spawn(
  process.execPath,
  [join(root, "bin", "meshvault.js"), "server", ...process.argv.slice(2)],
  {
    cwd: root,
    stdio: "inherit",
  },
);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 0 : 1)));
