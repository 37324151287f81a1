#!/usr/bin/env bash
# Installs anvil (Foundry's local EVM node) from the npm registry into .tools/, idempotently.
# The tests find it at .tools/bin/anvil (or $ANVIL_BIN). Nothing global is touched.
set -euo pipefail
ANVIL_NPM_VERSION="${ANVIL_NPM_VERSION:-1.7.1}"
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
bin="$tools/bin/anvil"
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "install-anvil: npm is required (apt-get install npm)" >&2; exit 1; }
mkdir -p "$tools/npm" "$tools/bin"
npm install --silent --no-audit --no-fund --prefix "$tools/npm" \
  "@foundry-rs/anvil-linux-amd64@${ANVIL_NPM_VERSION}" >&2
src="$tools/npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
[ -f "$src" ] || { echo "install-anvil: anvil binary not found in the npm package" >&2; exit 1; }
chmod +x "$src"
ln -sf "$src" "$bin"
"$bin" --version >&2
