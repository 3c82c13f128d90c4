#!/usr/bin/env node
// Runs the compiled CLI; `npm run build` produces dist/ (npm pack and npm install -g build it for you).
import { existsSync } from "node:fs";
import { fileURLToPath, URL } from "node:url";

const entry = new URL("../dist/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  console.error(
    `meshvault is not built: ${fileURLToPath(entry)} does not exist.\n` +
      "Build it first: `npm ci && npm run build` in the meshvault checkout " +
      "(or install the package: `npm install -g meshvault`).",
  );
  process.exit(1);
}
import(entry.href)
  .then((m) => m.main(process.argv))
  .catch((err) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  });
