#!/usr/bin/env node
// Runs the compiled CLI; `npm run build` produces dist/.
import("../dist/cli/main.js")
  .then((m) => m.main(process.argv))
  .catch((err) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  });
