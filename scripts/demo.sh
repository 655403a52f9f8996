#!/usr/bin/env bash
# Run the agent on an embedded demo store: seeds ./relais-demo once, then serves the local API on
# 127.0.0.1:8750. No broker, no config file needed. Extra arguments go to `relais demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_rust
ensure_packages
exec cargo run --locked --release --quiet -- demo "$@"
