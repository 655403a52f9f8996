#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs what the tests need, then runs them.
# This is the README's test command and what CI calls.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_rust
# sqlite3: the import benchmark's limit; pcscd + vsmartcard-vpcd: real PC/SC tests with a virtual reader.
# mosquitto: a real broker per sync test; mosquitto-clients: the drain benchmark's limit.
# systemd: systemd-analyze verify/security of the unit; procps: /bin/kill for its ExecReload.
# ejabberd and rumqttd: the other MQTT 5.0 brokers of the interop tests (docs/contract.md §10).
# postgresql: a real PostgreSQL per ingest test (tests/common/postgres.rs runs its own initdb).
ensure_packages sqlite3 pcscd vsmartcard-vpcd mosquitto mosquitto-clients systemd procps chromium ejabberd postgresql
ensure_rumqttd

mkdir -p target
log=target/test-output.txt
# The convergence simulations leave their summary lines here (a passing test's stdout is hidden).
rm -f target/tmp/convergence-*.txt
echo "==> cargo test: unit, integration (real binary, real files), crash, device and conformance tests"
cargo test --locked 2>&1 | tee "$log"
echo "==> convergence simulations (tests/convergence.rs)"
cat target/tmp/convergence-*.txt 2>/dev/null || echo "no convergence summary (mosquitto or postgresql missing?)"
echo "==> decode conformance over ../shared/testdata"
cargo test --locked -q --test conformance -- --nocapture 2>&1 | grep -E '^conformance' || true

# One closing line for the whole suite (cargo prints one per test binary, the last being doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log" | tee target/test-summary.txt
