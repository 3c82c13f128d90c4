#!/usr/bin/env bash
# Builds the independent SDS test client (go-control-plane's envoy/service/secret/v3 client
# over grpc-go; wrapper module test/sds-peers/client/) from the Go module proxy into
# ${MESHVAULT_CACHE_DIR:-~/.cache/meshvault}/sds-client-<hash>/sds-client for the agent's
# SDS tests. Only the first run builds (seconds with a warm module cache, a minute or two
# cold); later runs are silent no-ops. A failed build exits non-zero with Go's error.
#
#   scripts/ensure-sds-client.sh              ensure the binary exists
#   scripts/ensure-sds-client.sh --print-path same, then print the binary's path
#
# Env: MESHVAULT_CACHE_DIR (cache root).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/test/sds-peers/client"

# A hash of the wrapper module (and this script's build recipe) keys the directory, so any
# change rebuilds instead of reusing a stale binary.
sum="$(cat "$mod/go.mod" "$mod/go.sum" "$mod/main.go" "$0" | sha256sum | cut -c1-12)"
cache="${MESHVAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshvault}"
dir="$cache/sds-client-$sum"
bin="$dir/sds-client"

if [ ! -x "$bin" ]; then
  command -v go >/dev/null || {
    echo "ensure-sds-client: FAILED: no Go toolchain on PATH; install Go 1.26+ to build the SDS test client" >&2
    exit 1
  }
  mkdir -p "$dir"
  # Serialise concurrent first runs (several test files or checkouts at once).
  exec 9>"$dir/.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    echo "ensure-sds-client: building the SDS test client into $dir; first run only..." >&2
    start=$SECONDS
    log="$(mktemp)"
    if ! (cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 go build -trimpath -ldflags="-s -w" \
      -o "$dir/.sds-client.tmp" .) >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log" "$dir/.sds-client.tmp"
      echo "ensure-sds-client: FAILED to build the SDS test client from $mod" >&2
      exit 1
    fi
    rm -f "$log"
    mv -f "$dir/.sds-client.tmp" "$bin"
    echo "ensure-sds-client: built in $((SECONDS - start))s" >&2
  fi
  flock -u 9
fi

if [ "${1:-}" = "--print-path" ]; then
  echo "$bin"
fi
