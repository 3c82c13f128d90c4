#!/usr/bin/env bash
# Builds Istio's real istiod (pilot-discovery) from the Go module proxy (wrapper module
# in test/istio-peers/istiod/, pinned to the SAME istio.io/istio version as pilot-agent
# in test/istio-peers/agent/) into
# ${XDG_CACHE_HOME:-~/.cache}/meshvault/istiod-<version>-<hash>/, next to the Istio CRDs
# published in that module (manifests/charts/base/files/crd-all.gen.yaml), which the
# tests apply to their kube-apiserver before istiod starts. Only the first run builds
# (a few minutes; the pilot-agent build warms Go's build cache for most packages);
# later runs are silent no-ops. A failed build exits non-zero with Go's error.
#
#   scripts/ensure-istiod.sh              ensure the binary exists
#   scripts/ensure-istiod.sh --print-dir  same, then print the directory
#
# Env: MESHVAULT_CACHE_DIR (cache root), ISTIOD_BUILD_JOBS (go build -p, default 2).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mod="$root/test/istio-peers/istiod"

istio_version() {
  awk '($1 == "istio.io/istio" || ($1 == "require" && $2 == "istio.io/istio")) { print $NF; exit }' "$1/go.mod"
}
version="$(istio_version "$mod")"
agent_version="$(istio_version "$root/test/istio-peers/agent")"
if [ -z "$version" ] || [ "$version" != "$agent_version" ]; then
  echo "ensure-istiod: istio.io/istio in $mod/go.mod ('$version') must equal the one in test/istio-peers/agent/go.mod ('$agent_version'): istiod and pilot-agent are tested as one release; bump both together" >&2
  exit 1
fi
# The wrapper module and this recipe key the directory: any change rebuilds.
sum="$(cat "$mod/go.mod" "$mod/go.sum" "$mod/tools.go" "$0" | sha256sum | cut -c1-8)"
cache="${MESHVAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshvault}"
dir="$cache/istiod-$version-$sum"

if [ ! -x "$dir/pilot-discovery" ] || [ ! -f "$dir/crd-all.gen.yaml" ]; then
  mkdir -p "$dir"
  exec 9>"$dir/.lock" # concurrent first runs wait for one build
  flock 9
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  if [ ! -x "$dir/pilot-discovery" ]; then
    echo "ensure-istiod: building pilot-discovery (istio.io/istio@$version) into $dir; first run only, takes minutes..." >&2
    start=$SECONDS
    log="$(mktemp)"
    # Same flags as the pilot-agent build, so Go's build cache serves the shared packages;
    # the pseudo-version's last field is the commit, stamped into `pilot-discovery version`.
    v=istio.io/istio/pkg/version
    ld="-s -w -X $v.buildVersion=$version -X $v.buildGitRevision=${version##*-} -X $v.buildStatus=Clean"
    if ! (cd "$mod" && nice -n 10 go build -p "${ISTIOD_BUILD_JOBS:-2}" -trimpath -ldflags="$ld" \
      -o "$dir/.pilot-discovery.tmp" istio.io/istio/pilot/cmd/pilot-discovery) >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log" "$dir/.pilot-discovery.tmp"
      echo "ensure-istiod: FAILED to build pilot-discovery from $mod" >&2
      exit 1
    fi
    rm -f "$log"
    mv -f "$dir/.pilot-discovery.tmp" "$dir/pilot-discovery"
    echo "ensure-istiod: built pilot-discovery in $((SECONDS - start))s" >&2
  fi
  if [ ! -f "$dir/crd-all.gen.yaml" ]; then
    # The CRDs Istio's base chart installs; istiod's informers list and watch these kinds.
    src="$(cd "$mod" && go list -m -f '{{.Dir}}' istio.io/istio)/manifests/charts/base/files/crd-all.gen.yaml"
    [ -f "$src" ] || {
      echo "ensure-istiod: FAILED: no Istio CRD manifest at $src" >&2
      exit 1
    }
    cp "$src" "$dir/.crd-all.gen.yaml.tmp"
    mv -f "$dir/.crd-all.gen.yaml.tmp" "$dir/crd-all.gen.yaml"
  fi
  flock -u 9
fi

if [ "${1:-}" = "--print-dir" ]; then
  echo "$dir"
fi
