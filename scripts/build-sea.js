// `npm run build:sea`: meshvault as one executable file (Node's single executable application).
// esbuild bundles src/cli into one CommonJS file; the files the CLI reads at run time (proto/**,
// package.json) go into the executable as SEA assets and are written once to a directory under
// ~/.cache/meshvault named by their hash, which every `import.meta.url` in src/ points into (so
// `new URL("../../proto/", import.meta.url)` finds them). Output: dist-sea/meshvault
// (--out DIR for another directory).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  chmodSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
// `node scripts/build-sea.js [--out DIR]` (default dist-sea/, gitignored).
const outFlag = process.argv.indexOf("--out");
const out = outFlag > 0 ? process.argv[outFlag + 1] : join(root, "dist-sea");
const say = (line) => process.stderr.write(`build:sea: ${line}\n`);

// The issuance worker thread's module, bundled on its own (ESM, like dist/; pki only, no I/O).
const WORKER = "dist/server/issuance-worker.js";
const assets = [
  "package.json",
  WORKER,
  ...readdirSync(join(root, "proto"), { recursive: true })
    .map((f) => join("proto", String(f)))
    .filter((f) => f.endsWith(".proto")),
];
const hash = createHash("sha256");
const assetFile = (a) => (a === WORKER ? join(out, "issuance-worker.js") : join(root, a));

// Runs first in the bundle: where the assets are (the checkout when the bundle runs under plain
// node, an extracted copy inside a SEA) and the per-module import.meta.url that points there.
const bannerFor = (assetsHash) => `"use strict";
const __mvRoot = (() => {
  const path = require("node:path");
  let sea;
  try { sea = require("node:sea"); } catch { sea = undefined; }
  if (!sea || !sea.isSea()) return path.join(__dirname, "..");
  const fs = require("node:fs");
  // In the user's own cache (0700), not a shared temp dir another user could prepare.
  const base = path.join(process.env.XDG_CACHE_HOME || path.join(require("node:os").homedir(), ".cache"), "meshvault");
  fs.mkdirSync(base, { recursive: true, mode: 0o700 });
  const dir = path.join(base, "sea-assets-${assetsHash}");
  if (fs.existsSync(path.join(dir, ".complete"))) return dir;
  const tmp = dir + "." + process.pid;
  for (const key of ${JSON.stringify(assets)}) {
    fs.mkdirSync(path.dirname(path.join(tmp, key)), { recursive: true });
    fs.writeFileSync(path.join(tmp, key), Buffer.from(sea.getAsset(key)));
  }
  fs.writeFileSync(path.join(tmp, ".complete"), "");
  try { fs.renameSync(tmp, dir); } catch { fs.rmSync(tmp, { recursive: true, force: true }); }
  return dir;
})();
const __mvUrl = (rel) => require("node:url").pathToFileURL(require("node:path").join(__mvRoot, rel)).href;`;

/** Per module: import.meta.url as if the module sat at its place in the package. */
const importMetaUrl = {
  name: "import-meta-url",
  setup(b) {
    b.onLoad({ filter: /[\\/]src[\\/].*\.ts$/ }, (args) => {
      // As in the npm package: src/x/y.ts runs as dist/x/y.js (issuance-pool.ts starts its
      // workers from dist/server/issuance-worker.js when not under tsx).
      const rel = relative(root, args.path)
        .split("\\")
        .join("/")
        .replace(/^src\//, "dist/")
        .replace(/\.ts$/, ".js");
      const text = readFileSync(args.path, "utf8")
        // A module-local require made by createRequire would load from a node_modules next to
        // the module; without it esbuild bundles those require() calls like any other.
        .replace(/^const require = createRequire\(import\.meta\.url\);$/m, "")
        .replaceAll("import.meta.url", `__mvUrl(${JSON.stringify(rel)})`);
      return { contents: text, loader: "ts" };
    });
  },
};

/** Optional native helpers that libraries require inside try/catch (ws, node-fetch, debug): not
 * installed, so they become a module that throws, as a missing one would, without the SEA's
 * "require() only supports built-in modules" warning. */
const optionalMissing = {
  name: "optional-missing",
  setup(b) {
    b.onResolve({ filter: /^(bufferutil|utf-8-validate|encoding|supports-color)$/ }, (args) => ({
      path: args.path,
      namespace: "optional-missing",
    }));
    b.onLoad({ filter: /.*/, namespace: "optional-missing" }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`${args.path} is not bundled`)});`,
      loader: "js",
    }));
  },
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
say("bundling the issuance worker");
await build({
  entryPoints: [join(root, "src", "server", "issuance-worker.ts")],
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  outfile: assetFile(WORKER),
  logLevel: "warning",
});
for (const a of assets) hash.update(a).update(readFileSync(assetFile(a)));
const assetsHash = hash.digest("hex").slice(0, 16);
say("bundling src/cli with esbuild");
await build({
  stdin: {
    contents: `import { main } from "./src/cli/main.ts";
      main(process.argv).catch((err) => { console.error(err instanceof Error ? err.message : String(err)); process.exit(1); });`,
    resolveDir: root,
    sourcefile: "sea-entry.ts",
    loader: "ts",
  },
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  outfile: join(out, "meshvault.cjs"),
  banner: { js: bannerFor(assetsHash) },
  plugins: [importMetaUrl, optionalMissing],
  logLevel: "warning",
});

say(`embedding ${assets.length} assets and building the SEA blob`);
const config = {
  main: join(out, "meshvault.cjs"),
  output: join(out, "sea-prep.blob"),
  disableExperimentalSEAWarning: true,
  assets: Object.fromEntries(assets.map((a) => [a, assetFile(a)])),
};
writeFileSync(join(out, "sea-config.json"), JSON.stringify(config, null, 2));
execFileSync(process.execPath, ["--experimental-sea-config", join(out, "sea-config.json")], {
  stdio: "inherit",
});

const exe = join(out, "meshvault");
say(`copying ${process.execPath} (Node ${process.version}) and injecting the blob`);
copyFileSync(process.execPath, exe);
chmodSync(exe, 0o755);
execFileSync(
  process.execPath,
  [
    join(root, "node_modules", "postject", "dist", "cli.js"),
    exe,
    "NODE_SEA_BLOB",
    config.output,
    "--sentinel-fuse",
    "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2",
  ],
  { stdio: ["ignore", "ignore", "inherit"] },
);
say(`done: ${relative(root, exe)}`);
