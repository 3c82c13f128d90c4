#!/usr/bin/env bash
# Builds Istio's real pilot-agent (istio-agent) from the Go module proxy (wrapper
# module in test/istio-peers/agent/) into
# ${XDG_CACHE_HOME:-~/.cache}/meshvault/istio-agent-<version>-<hash>/ for the Istio
# interop tests, next to Istio's own Envoy bootstrap template (copied from the same
# module, so the agent can write the bootstrap it would hand to Envoy). Only the
# first run builds (about a minute with a warm module cache, longer cold); later
# runs are silent no-ops. A failed build exits non-zero with Go's error.
#
#   scripts/ensure-istio-agent.sh              ensure the binary exists
#   scripts/ensure-istio-agent.sh --print-dir  same, then print the directory
#
# Env: MESHVAULT_CACHE_DIR (cache root), ISTIO_AGENT_BUILD_JOBS (go build -p, default 2).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/test/istio-peers/agent"

# Istio publishes no semver tags for istio.io/istio: the wrapper pins a pseudo-version.
version="$(awk '($1 == "istio.io/istio" || ($1 == "require" && $2 == "istio.io/istio")) { print $NF; exit }' "$mod/go.mod")"
[ -n "$version" ] || {
  echo "ensure-istio-agent: cannot read the istio.io/istio version from $mod/go.mod" >&2
  exit 1
}
# A hash of the wrapper module (and this script's build recipe) keys the directory,
# so any change rebuilds instead of reusing a stale binary.
sum="$(cat "$mod/go.mod" "$mod/go.sum" "$mod/tools.go" "$0" | sha256sum | cut -c1-8)"
cache="${MESHVAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshvault}"
dir="$cache/istio-agent-$version-$sum"

if [ ! -x "$dir/pilot-agent" ] || [ ! -f "$dir/envoy_bootstrap_tmpl.json" ]; then
  mkdir -p "$dir"
  # Serialise concurrent first runs (several test runs in one checkout).
  exec 9>"$dir/.lock"
  flock 9
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  if [ ! -x "$dir/pilot-agent" ]; then
    echo "ensure-istio-agent: building pilot-agent (istio.io/istio@$version) into $dir; first run only, takes minutes..." >&2
    start=$SECONDS
    log="$(mktemp)"
    # The pseudo-version's last field is the commit; stamp both into `pilot-agent version`.
    v=istio.io/istio/pkg/version
    ld="-s -w -X $v.buildVersion=$version -X $v.buildGitRevision=${version##*-} -X $v.buildStatus=Clean"
    if ! (cd "$mod" && nice -n 10 go build -p "${ISTIO_AGENT_BUILD_JOBS:-2}" -trimpath -ldflags="$ld" \
      -o "$dir/.pilot-agent.tmp" istio.io/istio/pilot/cmd/pilot-agent) >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log" "$dir/.pilot-agent.tmp"
      echo "ensure-istio-agent: FAILED to build pilot-agent from $mod" >&2
      exit 1
    fi
    rm -f "$log"
    mv -f "$dir/.pilot-agent.tmp" "$dir/pilot-agent"
    echo "ensure-istio-agent: built pilot-agent in $((SECONDS - start))s" >&2
  fi
  if [ ! -f "$dir/envoy_bootstrap_tmpl.json" ]; then
    # Istio's images ship this file at ./var/lib/istio/envoy/envoy_bootstrap_tmpl.json;
    # without it the agent cannot start in sidecar (Envoy) mode.
    src="$(cd "$mod" && go list -m -f '{{.Dir}}' istio.io/istio)/tools/packaging/common/envoy_bootstrap.json"
    [ -f "$src" ] || {
      echo "ensure-istio-agent: FAILED: no Envoy bootstrap template at $src" >&2
      exit 1
    }
    cp "$src" "$dir/.envoy_bootstrap_tmpl.json.tmp"
    mv -f "$dir/.envoy_bootstrap_tmpl.json.tmp" "$dir/envoy_bootstrap_tmpl.json"
  fi
  flock -u 9
fi

if [ "${1:-}" = "--print-dir" ]; then
  echo "$dir"
fi
