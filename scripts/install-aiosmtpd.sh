#!/usr/bin/env bash
# Installs aiosmtpd (a real SMTP server, for the email-alert tests) from PyPI into a virtualenv under
# .tools/venv, idempotently. The tests find its Python at .tools/venv/bin/python. Nothing global is
# touched, except that Debian's python3-venv is installed with apt-get when it is missing.
set -euo pipefail
AIOSMTPD_VERSION="${AIOSMTPD_VERSION:-1.4.6}"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.tools/venv"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import aiosmtpd" >/dev/null 2>&1; then
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && apt-get install -y -qq python3 python3-venv >&2
  else
    echo "install-aiosmtpd: python3 with venv is required (apt-get install python3 python3-venv)" >&2
    exit 1
  fi
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2 || {
  # Debian's python3 without ensurepip: the venv module needs python3-venv.
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
    rm -rf "$venv" && python3 -m venv "$venv" >&2
  else
    exit 1
  fi
}
"$venv/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==${AIOSMTPD_VERSION}" >&2
"$venv/bin/python" -c "import aiosmtpd; print('aiosmtpd', aiosmtpd.__version__)" >&2
