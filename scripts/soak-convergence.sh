#!/usr/bin/env bash
# The convergence simulation (tests/convergence.rs) over many seeds: three stores (one with two
# tills) and the web against one ledger, with cuts and kills. CI runs one short seed; this runs
# SEEDS seeds of OPS operations each and stops at the first seed with a mismatch.
#
#   scripts/soak-convergence.sh                 # 20 seeds x 600 operations
#   SEEDS=100 OPS=1000 FIRST=1 scripts/soak-convergence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-20}
ops=${OPS:-600}
first=${FIRST:-1}
cargo build --locked --bins --tests >/dev/null 2>&1 || cargo build --locked --bins --tests
log=target/soak-convergence.txt
: > "$log"
for seed in $(seq "$first" $((first + seeds - 1))); do
    if ! RELAIS_CONVERGENCE_SEED=$seed RELAIS_CONVERGENCE_OPS=$ops \
        cargo test --locked -q --test convergence -- --nocapture 2>&1 | grep -E '^convergence|mismatch|panicked' | tee -a "$log"; then
        echo "soak: seed $seed failed" | tee -a "$log"
        exit 1
    fi
    if grep -q "^convergence: seed $seed .* mismatches 0$" "$log"; then
        continue
    fi
    echo "soak: seed $seed failed (see above)" | tee -a "$log"
    exit 1
done
awk '/^convergence:/ { n++; for (i = 1; i <= NF; i++) { if ($i == "converged_after_s") c[n] = $(i+1); if ($i == "loyalty_overspend") o += $(i+1); if ($i == "facts_while_cut") f += $(i+1) } }
     END { asort(c); printf "soak: %d seeds x '"$ops"' ops, 0 mismatches; converged after median %.1f s (max %.1f s); %d facts recorded while cut off; loyalty overspend %d points in all\n", n, c[int((n+1)/2)], c[n], f, o }' "$log" | tee -a "$log"
