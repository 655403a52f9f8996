#!/usr/bin/env bash
# Brief coverage-guided fuzzing of every decoder that reads bytes from outside (barcode, EPC,
# LLRP frames, serial framing, …): the targets in fuzz/fuzz_targets, each for FUZZ_SECONDS
# (default 20) with AddressSanitizer. CI runs it; a crash fails the run and leaves its input in
# fuzz/artifacts/<target>/ (reproduce: see fuzz/README.md).
#
#   scripts/fuzz.sh [TARGET…]
#
# cargo-fuzz drives rustc with unstable flags (-Zsanitizer). The CI machines have only the
# pinned stable toolchain (no nightly can be fetched), so RUSTC_BOOTSTRAP=1 lets that toolchain
# accept them; the decoders built here are the same code the agent runs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}
export CARGO_TERM_COLOR=never RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> cargo install cargo-fuzz"
  cargo install --locked cargo-fuzz --version '^0.13' 2>&1 | tail -1
fi
python3 fuzz/seeds.py
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
echo "==> cargo fuzz build -O (${targets[*]})"
cargo fuzz build -O
status=0 summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "==> fuzz $t for ${secs}s"
  log=$(mktemp)
  if cargo fuzz run -O "$t" -- -max_total_time="$secs" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    summary+=("fuzz $t: ${runs:-?} runs in ${secs}s, ${cov:-cov: ?}, no crash")
  else
    tail -40 "$log"
    summary+=("fuzz $t: CRASH (input in fuzz/artifacts/$t/)")
    status=1
  fi
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit $status
