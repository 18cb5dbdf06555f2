#!/usr/bin/env bash
# Runs the official openai Python SDK and the official MCP Python SDK (over streamable HTTP and
# over stdio through `omniroute mcp`) against `omniroute serve` (built-in default config, fresh
# data dir), then stops the server with SIGTERM and checks it exits 0 and the log verifies.
# Installs what it needs itself, into target/py-venv.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/py-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "openai>=1.50,<3" "mcp>=2.3,<3"

cargo build --quiet --bin omniroute
bin=${CARGO_TARGET_DIR:-target}/debug/omniroute
data=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

"$bin" serve --listen 127.0.0.1:0 --data-dir "$data/d" 2> "$data/serve.log" &
pid=$!
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$data/serve.log")
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/serve.log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "omniroute serve did not start"; cat "$data/serve.log"; exit 1; }

"$venv/bin/python" tests/python/openai_sdk.py "$addr/v1"
"$venv/bin/python" tests/python/mcp_sdk.py "$addr" "$bin" "$data/d"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
if [ "$status" -ne 0 ]; then
  echo "omniroute serve exited $status after SIGTERM"; cat "$data/serve.log"; exit 1
fi
"$bin" log verify --data-dir "$data/d"
