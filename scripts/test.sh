#!/usr/bin/env bash
# The one test command (npm test): types, lint, format, then every test file.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== typecheck"; npx tsc -p tsconfig.json --noEmit
echo "== lint"; npx eslint .
echo "== format"; npx prettier --check . >/dev/null || { npx prettier --check . ; exit 1; }
# Real peers used by integration tests; installed once into ~/.cache/meshvault.
for s in scripts/ensure-*.sh; do [ -e "$s" ] && bash "$s"; done
echo "== build"; npx tsc -p tsconfig.build.json
echo "== tests"
mapfile -t all < <(find test -name '*.test.ts' -not -path '*/kube-peers/*' | sort)
# Three files run at a time (most of a file's time is spent waiting on OpenBao, the apiserver
# or child processes: three finish sooner than two on 2 cores), started in list order: the
# longest start first, so the run does not end with one long file running alone. Every other
# file follows in name order.
long=(
  test/rotation/root-rotation.test.ts
  test/bench-harness.test.ts
  test/rotation/replicas.test.ts
  test/rotation/cacerts-rotation.test.ts
  test/rotation/vault-sign-rotation.test.ts
  test/server/readiness.test.ts
  test/cli/package.test.ts
  test/rotation/kube-state.test.ts
  test/istio/istiod.test.ts
  test/kube/cacerts.test.ts
  test/cli/messages.test.ts
  test/rotation/cross-sign.test.ts
  test/rotation/import-root.test.ts
)
for f in "${long[@]}"; do
  [ -e "$f" ] || { echo "scripts/test.sh: $f is listed as a long test but does not exist; update the list" >&2; exit 1; }
done
mapfile -t rest < <(printf '%s\n' "${all[@]}" | grep -vxF -f <(printf '%s\n' "${long[@]}"))
files=("${long[@]}" "${rest[@]}")
# The CLI processes tests start run a copy of the build above instead of tsx: a third of the
# CPU per start (test/helpers/cli.ts). A copy: the package test's `npm pack` rebuilds dist/.
export MESHVAULT_TEST_CLI="$PWD/node_modules/.cache/meshvault-test-cli"
rm -rf "$MESHVAULT_TEST_CLI" && mkdir -p "$MESHVAULT_TEST_CLI"
cp -r dist package.json "$MESHVAULT_TEST_CLI/" && ln -s "$PWD/proto" "$MESHVAULT_TEST_CLI/proto"
# A hung test fails after 20 min instead of holding CI to its limit (the longest file, the root
# rotation load test, takes about a minute on an idle 2-core machine).
exec node --import tsx --test --test-concurrency=3 --test-timeout=1200000 --test-reporter=spec "${files[@]}"
