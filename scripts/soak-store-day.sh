#!/usr/bin/env bash
# Soak the store-day oracle (tests/store_day.rs): a release build of the agent and the test, then
# day after day for MINUTES (default 10) — steady days and days with the agent SIGKILLed at
# random moments in turn, each from a new seed — every answer and every touched stock level and
# balance checked against the oracle. Ends with one machine-readable line:
#   store_day_soak {"seeds":…,"operations":…,"faults_injected":…,"mismatches":0,"seconds":…}
# Exit status 0 when the agent never disagreed with the oracle.
#
#   scripts/soak-store-day.sh 30                        # half an hour
#   RELAIS_STORE_DAY_SEEDS=5000 scripts/soak-store-day.sh  # first seed (default 1000)
#   RELAIS_STORE_DAY_ROUNDS=300 RELAIS_STORE_DAY_TILLS=12 scripts/soak-store-day.sh 60
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_rust
ensure_packages

minutes="${1:-10}"
case "$minutes" in
  '' | *[!0-9.]*) echo "usage: $0 [MINUTES]" >&2; exit 64 ;;
esac

mkdir -p target
log=target/soak-store-day.txt
echo "==> release build of the store-day test and the relais it runs"
cargo test --locked --release --test store_day --no-run
echo "==> store days for $minutes min (log: $log)"
status=0
RELAIS_STORE_DAY_SOAK_MINUTES="$minutes" RELAIS_STORE_DAY_REPORT=target/soak-store-day \
  cargo test --locked --release --test store_day -- --ignored --exact store_day_soak --nocapture \
  >"$log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  # The failure: mismatches by kind and the first ones in full (all of them in the report file).
  sed -n '/panicked at/,/^failures:$/p' "$log" | head -150 >&2
  ls target/soak-store-day.*.txt 2>/dev/null | sed 's/^/report: /' >&2 || true
fi
summary=$(grep '^store_day_soak ' "$log" | tail -1 || true)
if [ -z "$summary" ]; then
  echo "store_day_soak: no summary line (the test did not finish); see $log" >&2
  tail -30 "$log" >&2
  exit 1
fi
echo "$summary"
exit "$status"
