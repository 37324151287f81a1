#!/usr/bin/env bash
# Starts anvil on 127.0.0.1:$1 with a block every $2 s, then runs blockwatch against it with
# blockwatch.example.toml. Ctrl-C stops both.
set -euo pipefail
port="${1:-8545}"
block_time="${2:-2}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
listening() { (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; }
if listening; then
  echo "something already listens on 127.0.0.1:${port}; using it as the node" >&2
else
  .tools/bin/anvil --host 127.0.0.1 --port "$port" --block-time "$block_time" --silent --max-persisted-states 0 &
  anvil_pid=$!
  trap 'kill $anvil_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 50); do
    listening && break
    sleep 0.1
  done
fi
export ANVIL_PORT="$port"
./target/release/blockwatch run --config blockwatch.example.toml
