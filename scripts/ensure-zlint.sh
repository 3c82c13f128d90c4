#!/usr/bin/env bash
# Builds zlint (github.com/zmap/zlint/v3, the certificate linter CAs use to check RFC 5280
# and friends) from the Go module proxy (wrapper module in test/zlint-peer/) into
# ${XDG_CACHE_HOME:-~/.cache}/meshvault/zlint-<version>-<hash>/ for the certificate
# profile tests. Only the first run builds (under a minute with a warm module cache);
# later runs are silent no-ops. A failed build exits non-zero with Go's error.
#
#   scripts/ensure-zlint.sh              ensure the binary exists
#   scripts/ensure-zlint.sh --print-dir  same, then print the directory
#
# Env: MESHVAULT_CACHE_DIR (cache root), ZLINT_BUILD_JOBS (go build -p, default 2).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/test/zlint-peer"

version="$(awk '($1 == "github.com/zmap/zlint/v3" || ($1 == "require" && $2 == "github.com/zmap/zlint/v3")) { print $NF; exit }' "$mod/go.mod")"
[ -n "$version" ] || {
  echo "ensure-zlint: cannot read the github.com/zmap/zlint/v3 version from $mod/go.mod" >&2
  exit 1
}
# The wrapper module and this recipe key the directory: any change rebuilds.
sum="$(cat "$mod/go.mod" "$mod/go.sum" "$mod/tools.go" "$0" | sha256sum | cut -c1-8)"
cache="${MESHVAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshvault}"
dir="$cache/zlint-$version-$sum"

if [ ! -x "$dir/zlint" ]; then
  mkdir -p "$dir"
  # Serialise concurrent first runs.
  exec 9>"$dir/.lock"
  flock 9
  if [ ! -x "$dir/zlint" ]; then
    echo "ensure-zlint: building zlint $version into $dir; first run only..." >&2
    start=$SECONDS
    log="$(mktemp)"
    if ! (cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 go build -p "${ZLINT_BUILD_JOBS:-2}" \
      -trimpath -ldflags="-s -w" -o "$dir/.zlint.tmp" github.com/zmap/zlint/v3/cmd/zlint) >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log" "$dir/.zlint.tmp"
      echo "ensure-zlint: FAILED to build zlint from $mod (needs Go and the Go module proxy)" >&2
      exit 1
    fi
    rm -f "$log"
    mv -f "$dir/.zlint.tmp" "$dir/zlint"
    echo "ensure-zlint: built zlint in $((SECONDS - start))s" >&2
  fi
  flock -u 9
fi

if [ "${1:-}" = "--print-dir" ]; then
  echo "$dir"
fi
