#!/usr/bin/env bash
# Builds helm from the Go module proxy into ${XDG_CACHE_HOME:-~/.cache}/meshvault/helm-<version>/
# for the chart tests (test/kube/chart.test.ts renders deploy/helm/meshvault with it).
# Only the first run builds (about 3 minutes); later runs are silent no-ops.
#
#   scripts/ensure-helm.sh          ensure the binary exists
#   scripts/ensure-helm.sh --print  same, then print its path
#
# Env: MESHVAULT_CACHE_DIR (cache root), HELM_BUILD_JOBS (go build -p, default 2).
set -euo pipefail
version="v3.19.0"
cache="${MESHVAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshvault}"
dir="$cache/helm-$version"
if [ ! -x "$dir/helm" ]; then
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock 9
  if [ ! -x "$dir/helm" ]; then
    echo "ensure-helm: building helm $version into $dir; first run only, takes minutes..." >&2
    start=$SECONDS
    log="$(mktemp)"
    if ! (cd "$dir" && CGO_ENABLED=0 GOBIN="$dir/.bin" nice -n 10 go install -p "${HELM_BUILD_JOBS:-2}" \
      -trimpath -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
      "helm.sh/helm/v3/cmd/helm@$version") >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log"
      echo "ensure-helm: FAILED to build helm $version" >&2
      exit 1
    fi
    rm -f "$log"
    mv -f "$dir/.bin/helm" "$dir/helm"
    rmdir "$dir/.bin" 2>/dev/null || true
    echo "ensure-helm: built helm in $((SECONDS - start))s" >&2
  fi
  flock -u 9
fi
if [ "${1:-}" = "--print" ]; then
  echo "$dir/helm"
fi
