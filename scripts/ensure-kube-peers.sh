#!/usr/bin/env bash
# Builds a real kube-apiserver and etcd from the Go module proxy (wrapper modules
# in test/kube-peers/) into ${XDG_CACHE_HOME:-~/.cache}/meshvault/kube-peers-<versions>/
# for the Kubernetes integration tests. Only the first run builds (minutes);
# later runs are silent no-ops. A failed build exits non-zero with Go's error.
#
#   scripts/ensure-kube-peers.sh              ensure both binaries exist
#   scripts/ensure-kube-peers.sh --print-dir  same, then print the directory
#
# Env: MESHVAULT_CACHE_DIR (cache root), KUBE_PEERS_BUILD_JOBS (go build -p, default 2).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
peers="$root/test/kube-peers"

modver() { # modver <go.mod> <module path>: the version required in that go.mod
  awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) { print $NF; exit }' "$1"
}
kube_version="$(modver "$peers/apiserver/go.mod" k8s.io/kubernetes)"
etcd_version="$(modver "$peers/etcd/go.mod" go.etcd.io/etcd/server/v3)"
[ -n "$kube_version" ] && [ -n "$etcd_version" ] || {
  echo "ensure-kube-peers: cannot read versions from $peers/*/go.mod" >&2
  exit 1
}
# A hash of the wrapper modules keys the directory too, so any change rebuilds.
sum="$(cat "$peers"/apiserver/go.mod "$peers"/apiserver/go.sum "$peers"/etcd/go.mod \
  "$peers"/etcd/go.sum "$peers"/etcd/main.go | sha256sum | cut -c1-8)"
cache="${MESHVAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshvault}"
dir="$cache/kube-peers-$kube_version-etcd-$etcd_version-$sum"

if [ ! -x "$dir/kube-apiserver" ] || [ ! -x "$dir/etcd" ]; then
  mkdir -p "$dir"
  # Serialise concurrent first runs (several test runs in one checkout).
  exec 9>"$dir/.lock"
  flock 9
  export CGO_ENABLED=0 GOFLAGS=-mod=mod
  jobs="${KUBE_PEERS_BUILD_JOBS:-2}"
  build() { # build <name> <module dir> <package> [ldflags...]
    local name="$1" mod="$2" pkg="$3" ld="-s -w ${4:-}" start=$SECONDS log
    [ -x "$dir/$name" ] && return 0
    echo "ensure-kube-peers: building $name ($pkg) into $dir; first run only, takes minutes..." >&2
    log="$(mktemp)"
    if ! (cd "$mod" && nice -n 10 go build -p "$jobs" -trimpath -ldflags="$ld" \
      -o "$dir/.$name.tmp" "$pkg") >"$log" 2>&1; then
      cat "$log" >&2
      rm -f "$log" "$dir/.$name.tmp"
      echo "ensure-kube-peers: FAILED to build $name from $mod" >&2
      exit 1
    fi
    rm -f "$log"
    mv -f "$dir/.$name.tmp" "$dir/$name"
    echo "ensure-kube-peers: built $name in $((SECONDS - start))s" >&2
  }
  build etcd "$peers/etcd" .
  v=k8s.io/component-base/version
  minor="${kube_version#v1.}"
  minor="${minor%%.*}"
  build kube-apiserver "$peers/apiserver" k8s.io/kubernetes/cmd/kube-apiserver \
    "-X $v.gitVersion=$kube_version -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  flock -u 9
fi

if [ "${1:-}" = "--print-dir" ]; then
  echo "$dir"
fi
