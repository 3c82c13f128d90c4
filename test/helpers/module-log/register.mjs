// `node --import <this file>` with MESHVAULT_MODULE_LOG=<file>: every module the process loads is
// appended to <file>, one URL or path a line: ES modules (and packages imported from them) as
// the loader hook sees them, CommonJS files from require's cache when the process exits.
// test/cli/startup.test.ts reads it to see what a command loaded.
import { appendFileSync } from "node:fs";
import { createRequire, register } from "node:module";
import process from "node:process";

const file = process.env.MESHVAULT_MODULE_LOG;
if (file) {
  register("./hooks.mjs", import.meta.url, { data: { file } });
  const cache = createRequire(import.meta.url).cache;
  process.on("exit", () =>
    appendFileSync(
      file,
      Object.keys(cache)
        .map((f) => `${f}\n`)
        .join(""),
    ),
  );
}
