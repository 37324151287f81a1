#!/usr/bin/env bash
# Installs Debian's postgresql package (the server the cluster-mode tests start, as an unprivileged
# user in a temporary directory of their own), idempotently: nothing happens when a PostgreSQL
# server binary is already under /usr/lib/postgresql/*/bin. A system package like chromium,
# installed with apt-get as root (as CI runs); apt's package lists are refreshed only if the first
# try fails.
#
# No service is started or needed: the package's own cluster (if its post-install script makes one)
# is stopped, and the tests never use it. Without systemd (CI containers) nothing starts it again.
set -euo pipefail
have() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }
if have; then
  exit 0
fi
fail() {
  echo "install-postgres: $1; the cluster-mode tests need Debian's postgresql (/usr/lib/postgresql/*/bin)" >&2
  exit 1
}
command -v apt-get >/dev/null 2>&1 || fail "apt-get (Debian) is required"
[ "$(id -u)" = 0 ] || fail "run as root (or: sudo apt-get install --no-install-recommends postgresql)"
export DEBIAN_FRONTEND=noninteractive
# Keep the package's scripts from starting a service (policy-rc.d: 101 = action forbidden); removed
# again after, unless one was there before.
policy=/usr/sbin/policy-rc.d
own_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ -n "$own_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
install() { apt-get install -y -qq --no-install-recommends postgresql >&2; }
if ! install; then
  apt-get update -qq >&2 || fail "apt-get update failed"
  install || fail "apt-get install postgresql failed"
fi
have || fail "no /usr/lib/postgresql/*/bin/postgres after installing"
# A cluster the package made and started anyway (no policy-rc.d honoured): stopped, and not started
# at boot; the tests make their own.
if command -v pg_lsclusters >/dev/null 2>&1; then
  { pg_lsclusters --no-header 2>/dev/null || true; } | while read -r version name _port status _; do
    if [ "$status" = online ]; then
      pg_ctlcluster "$version" "$name" stop >&2 || true
    fi
    conf="/etc/postgresql/$version/$name/start.conf"
    if [ -f "$conf" ]; then echo manual >"$conf"; fi
  done
fi
ls -d /usr/lib/postgresql/*/bin/postgres >&2
