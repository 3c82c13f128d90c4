#!/usr/bin/env bash
# Builds the benchmark's Go peers from the Go module proxy (wrapper module in bench/go/) into
# ${XDG_CACHE_HOME:-~/.cache}/meshvault/bench-go-<istio version>-<hash>/:
#   istiod-ca  istiod's own CA server (Istio's CreateCertificate server, util.GenCertFromCSR,
#              Istio's JWT authenticator), the baseline bench/istiod.ts compares meshvault with
#   loadgen    the one load generator for meshvault and every baseline (verifies each response)
# Same istio.io/istio version as test/istio-peers/agent, so the module cache is shared. Only
# the first run builds (a few minutes on 2 cores); later runs are silent no-ops.
#
#   scripts/ensure-bench-go.sh              ensure the binaries exist
#   scripts/ensure-bench-go.sh --print-dir  same, then print the directory
#
# Env: MESHVAULT_CACHE_DIR (cache root), BENCH_GO_BUILD_JOBS (go build -p, default 2).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/bench/go"

version="$(awk '$1 == "istio.io/istio" { print $2; exit }' "$mod/go.mod")"
[ -n "$version" ] || {
  echo "ensure-bench-go: cannot read the istio.io/istio version from $mod/go.mod" >&2
  exit 1
}
# The wrapper module's files (and this recipe) key the directory: any change rebuilds.
sum="$(cat "$mod/go.mod" "$mod/go.sum" "$mod"/*/main.go "$0" | sha256sum | cut -c1-8)"
cache="${MESHVAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshvault}"
dir="$cache/bench-go-$version-$sum"

if [ ! -x "$dir/istiod-ca" ] || [ ! -x "$dir/loadgen" ]; then
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock 9
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  for bin in istiod-ca loadgen; do
    [ -x "$dir/$bin" ] && continue
    echo "ensure-bench-go: building $bin (istio.io/istio@$version) into $dir; first run only, takes minutes..." >&2
    start=$SECONDS
    log="$(mktemp)"
    if ! (cd "$mod" && nice -n 10 go build -p "${BENCH_GO_BUILD_JOBS:-2}" -trimpath -ldflags="-s -w" \
      -o "$dir/.$bin.tmp" "./$bin") >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log" "$dir/.$bin.tmp"
      echo "ensure-bench-go: FAILED to build $bin from $mod" >&2
      exit 1
    fi
    rm -f "$log"
    mv -f "$dir/.$bin.tmp" "$dir/$bin"
    echo "ensure-bench-go: built $bin in $((SECONDS - start))s" >&2
  done
  flock -u 9
fi

if [ "${1:-}" = "--print-dir" ]; then
  echo "$dir"
fi
