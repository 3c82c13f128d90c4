#!/usr/bin/env bash
# npm run bench: every benchmark entry point under bench/ that exists (ca, agents, vault),
# one after another so they do not compete for the cores. Not a test: numbers, no pass/fail.
#   BENCH_SECONDS=2 bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# agents.ts measures the compiled agent (dist/): tsx would add ~40 MB to its RSS.
npx tsc -p tsconfig.build.json
status=0
for name in ca agents vault; do
  f="bench/$name.ts"
  [ -e "$f" ] || continue
  echo "== $f"
  node --import tsx "$f" || { echo "!! $f failed ($?)"; status=1; }
  echo
done
exit $status
