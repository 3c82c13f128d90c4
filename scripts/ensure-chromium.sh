#!/usr/bin/env bash
# Makes sure a headless Chromium is installed for the status page test
# (test/server/status-page.test.ts): the Debian/Ubuntu package `chromium`, installed with
# apt-get (non-interactive) when missing. Later runs are silent no-ops.
#
#   scripts/ensure-chromium.sh          ensure the browser exists
#   scripts/ensure-chromium.sh --print  same, then print its path
#
# Env: CHROMIUM (use this binary instead).
set -euo pipefail
find_chromium() {
  if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then echo "$CHROMIUM"; return 0; fi
  for b in chromium chromium-browser google-chrome-stable google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
  done
  return 1
}
if ! bin="$(find_chromium)"; then
  cache="${MESHVAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshvault}"
  mkdir -p "$cache"
  exec 9>"$cache/.chromium.lock"
  flock 9
  if ! bin="$(find_chromium)"; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
      else
        echo "ensure-chromium: chromium is not installed and installing it needs root: run 'apt-get install -y chromium' as root, or set CHROMIUM=/path/to/chrome" >&2
        exit 1
      fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "ensure-chromium: chromium is not installed and there is no apt-get here: install Chromium or Chrome and set CHROMIUM=/path/to/it" >&2
      exit 1
    fi
    echo "ensure-chromium: installing the chromium package with apt-get; first run only..." >&2
    log="$(mktemp)"
    if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      rm -f "$log"
      echo "ensure-chromium: FAILED to install chromium with apt-get (see above)" >&2
      exit 1
    fi
    rm -f "$log"
    bin="$(find_chromium)" || { echo "ensure-chromium: chromium installed but not on PATH" >&2; exit 1; }
  fi
  flock -u 9
fi
if [ "${1:-}" = "--print" ]; then
  echo "$bin"
fi
