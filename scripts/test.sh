#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs what the tests need, then runs them.
# This is the README's test command and what CI calls.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_rust
# sqlite3: the import benchmark's limit; pcscd + vsmartcard-vpcd: real PC/SC tests with a virtual reader.
ensure_packages sqlite3 pcscd vsmartcard-vpcd

echo "==> cargo test: unit, integration (real binary, real files), crash and conformance tests"
cargo test --locked
echo "==> decode conformance over ../shared/testdata"
cargo test --locked -q --test conformance -- --nocapture 2>&1 | grep -E '^conformance' || true
