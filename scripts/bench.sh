#!/usr/bin/env bash
# npm run bench: every benchmark entry point under bench/ that exists (istiod, ca, agents,
# vault, rotation, cli-startup), one after another so they do not compete for the cores. Not a test: numbers, no
# pass/fail. bench/istiod.ts (meshvault vs istiod's own CA, Go load generator) builds its Go
# peers on first use (scripts/ensure-bench-go.sh) and runs its quick mode unless told:
#   npm run bench                                  quick (a few minutes on 2 cores)
#   BENCH_MODE=full npm run bench                  5 s per run in bench/istiod.ts
#   BENCH_SECONDS=2 bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# agents.ts measures the compiled agent (dist/): tsx would add ~40 MB to its RSS.
npx tsc -p tsconfig.build.json
status=0
for name in istiod ca agents vault rotation cli-startup; do
  f="bench/$name.ts"
  [ -e "$f" ] || continue
  echo "== $f"
  node --import tsx "$f" || { echo "!! $f failed ($?)"; status=1; }
  echo
done
exit $status
