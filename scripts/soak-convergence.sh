#!/usr/bin/env bash
# The convergence simulation (tests/convergence.rs) over many seeds: three stores (one with two
# tills) and the web against one ledger, with cuts and kills. CI runs one short seed per
# engine; this runs SEEDS seeds of OPS operations each on ENGINE (postgresql, the default, with
# a database crash among the faults; or sqlite) and stops at the first seed with a mismatch.
#
#   scripts/soak-convergence.sh                 # 20 seeds x 600 operations on PostgreSQL
#   SEEDS=100 OPS=1000 FIRST=1 ENGINE=sqlite scripts/soak-convergence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-20}
ops=${OPS:-600}
first=${FIRST:-1}
engine=${ENGINE:-postgresql}
case "$engine" in
  postgresql|sqlite) ;;
  *) echo "soak: ENGINE must be postgresql or sqlite, not $engine" >&2; exit 2 ;;
esac
cargo build --locked --bins --tests >/dev/null 2>&1 || cargo build --locked --bins --tests
log=target/soak-convergence.txt
: > "$log"
for seed in $(seq "$first" $((first + seeds - 1))); do
    if ! RELAIS_CONVERGENCE_SEED=$seed RELAIS_CONVERGENCE_OPS=$ops \
        cargo test --locked -q --test convergence -- --nocapture "$engine" 2>&1 | grep -E '^convergence|mismatch|panicked' | tee -a "$log"; then
        echo "soak: seed $seed failed" | tee -a "$log"
        exit 1
    fi
    if grep -q "^convergence: engine [A-Za-z]* seed $seed .* mismatches 0$" "$log"; then
        continue
    fi
    echo "soak: seed $seed failed (see above)" | tee -a "$log"
    exit 1
done
python3 - "$log" "$ops" "$engine" <<'PY' | tee -a "$log"
import re, statistics, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("convergence:")]
field = lambda name: [float(re.search(name + r" (\S+)", l).group(1)) for l in lines]
took, cut, over = field("converged_after_s"), field("facts_while_cut"), field("loyalty_overspend")
worst = field("worst_customer_overspend")
print(f"soak: {len(lines)} seeds x {sys.argv[2]} ops on {sys.argv[3]}, 0 mismatches; converged after median "
      f"{statistics.median(took):.1f} s (max {max(took):.1f} s); {int(sum(cut))} facts recorded while "
      f"cut off; loyalty overspend {int(sum(over))} points in all, worst customer {int(max(worst))}")
PY
