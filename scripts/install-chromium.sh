#!/usr/bin/env bash
# Installs Debian's chromium package (the headless browser the browser tests drive over the DevTools
# protocol), idempotently: nothing happens when /usr/bin/chromium already runs. Unlike the other tools
# this is a system package (Chromium needs its shared libraries and fonts from Debian), installed with
# apt-get as root (as CI runs); apt's package lists are refreshed only if the first try fails.
set -euo pipefail
bin=/usr/bin/chromium
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  exit 0
fi
fail() {
  echo "install-chromium: $1; the browser tests (tests/page.rs) need Debian's chromium at $bin" >&2
  exit 1
}
command -v apt-get >/dev/null 2>&1 || fail "apt-get (Debian) is required"
[ "$(id -u)" = 0 ] || fail "run as root (or: sudo apt-get install --no-install-recommends chromium)"
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends chromium >&2; }
if ! install; then
  apt-get update -qq >&2 || fail "apt-get update failed"
  install || fail "apt-get install chromium failed"
fi
"$bin" --version >&2 || fail "$bin does not run"
