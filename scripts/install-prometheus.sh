#!/usr/bin/env bash
# Installs Debian's prometheus package (prometheus and promtool) into .tools/prometheus, idempotently,
# by downloading the .deb and unpacking it: no service is installed or started, nothing global changes
# (apt's package lists are refreshed once if the package cannot be found). The tests find the binaries
# at .tools/bin/prometheus and .tools/bin/promtool.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
if [ -x "$tools/bin/promtool" ] && "$tools/bin/promtool" --version >/dev/null 2>&1 \
  && [ -x "$tools/bin/prometheus" ]; then
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || { echo "install-prometheus: apt-get (Debian) is required" >&2; exit 1; }
mkdir -p "$tools/deb" "$tools/bin"
cd "$tools/deb"
rm -f prometheus_*.deb
if ! apt-get download prometheus >&2 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2
    apt-get download prometheus >&2
  else
    echo "install-prometheus: cannot download Debian's prometheus package (run apt-get update as root)" >&2
    exit 1
  fi
fi
rm -rf "$tools/prometheus"
dpkg-deb -x prometheus_*.deb "$tools/prometheus"
ln -sf "$tools/prometheus/usr/bin/prometheus" "$tools/bin/prometheus"
ln -sf "$tools/prometheus/usr/bin/promtool" "$tools/bin/promtool"
"$tools/bin/promtool" --version >&2
