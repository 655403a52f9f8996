#!/usr/bin/env bash
# CI stage for the store boxes: ARM release builds, the three Debian packages, the amd64 package
# installed into a scratch root, and the host-independent tests under qemu for both ARM targets.
# Called by .ci/run after the test suite and the benchmarks; runs on its own too (root or sudo;
# Debian 12). docs/packaging.md describes each step, ADR 0010 the choices.
#
# Environment: CARGO_TARGET_DIR (default target/); RELAIS_AMD64_BIN: the native binary to
# package for the scratch-root and field-install checks (default $CARGO_TARGET_DIR/release/relais,
# built here when missing; CI passes the benchmark stage's); QEMU_TEST_TARGETS (below).
# Closing lines, one per check: `qemu aarch64: N passed, M failed`, `qemu armv7: …`,
# `package: …`. Exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
. scripts/cross.sh
tdir=${CARGO_TARGET_DIR:-target}
mkdir -p "$tdir"
summary=$tdir/arm-summary.txt
: >"$summary"
arm_targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
status=0
t_stage=$(date +%s)
t_step=$t_stage
step() { echo; echo "==> [arm +$(( $(date +%s) - t_stage ))s] $*"; t_step=$(date +%s); }
took() { echo "$1: $(( $(date +%s) - t_step ))s" | tee -a "$summary"; }
note() { echo "$*" | tee -a "$summary"; }

step "install: rustup targets, cross gcc, the targets' libc/libudev/libpcsclite (multiarch) and -dev files, qemu-user-static"
# The targets' std comes from rustup's servers. A CI machine that cannot reach them cannot do any
# of this stage: say so loudly in the summary rather than fail the product's CI on the network.
for target in "${arm_targets[@]}"; do
  rustup target list --installed 2>/dev/null | grep -qx "$target" && continue
  if ! rustup target add "$target"; then
    note "arm: SKIPPED: \`rustup target add $target\` failed (rustup's servers unreachable?); nothing in this stage ran"
    exit 0
  fi
done
cross_install "${arm_targets[@]}"
took "install"

# Release: the repo's own profile (thin LTO, stripped): these are the binaries the packages ship.
# Only the agent (`--bin relais`, without the `central` feature); relaisctl is central's tool and
# is not packaged for the boxes.
for target in "${arm_targets[@]}"; do
  step "cargo build --release --target $target --bin relais"
  cross_env "$target"
  cargo build --locked --release --target "$target" --no-default-features --bin relais
  took "release build $CROSS_ARCH"
done

# The release binaries start under qemu user-mode: version, the packaged default config, and
# `relais doctor --json` on a scratch config (offline, no devices: every check must answer).
for target in "${arm_targets[@]}"; do
  cross_target "$target"
  bin=$tdir/$target/release/relais
  step "$CROSS_ARCH release binary under $CROSS_QEMU"
  scratch=$(mktemp -d)
  printf '[agent]\nid = "ci-store/qemu"\ndata_dir = "%s/data"\n' "$scratch" >"$scratch/relais.toml"
  run() { $(cross_qemu) "$bin" "$@"; }
  ok=1
  version=$(run --version) || ok=0
  run config validate packaging/relais.toml || ok=0
  doctor_status=0
  run --config "$scratch/relais.toml" doctor --json >"$scratch/doctor.json" || doctor_status=$?
  # doctor's exit status is the worst finding (warn: the data dir does not exist yet); a crash
  # or a usage error is not a finding.
  if [ "$doctor_status" -ge 64 ] || ! grep -q '"check": "config"' "$scratch/doctor.json"; then
    ok=0; cat "$scratch/doctor.json"
  fi
  glibc=$("$CROSS_GNU-objdump" -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  rm -rf "$scratch"
  note "binary $CROSS_ARCH: $(stat -c %s "$bin") bytes, needs $glibc; $version; config validate + doctor --json (exit $doctor_status) under qemu: $([ $ok = 1 ] && echo ok || echo FAILED)"
  [ $ok = 1 ] || status=1
done

step "Debian packages"
amd64_bin=${RELAIS_AMD64_BIN:-$tdir/release/relais}
if [ ! -f "$amd64_bin" ]; then
  echo "no native release binary at $amd64_bin: building it"
  cargo build --locked --release --no-default-features --bin relais
  amd64_bin=$tdir/release/relais
fi
debs=()
debs+=("$(packaging/build-deb.sh amd64 "$amd64_bin" | tail -1)")
debs+=("$(packaging/build-deb.sh arm64 | tail -1)")
debs+=("$(packaging/build-deb.sh armhf | tail -1)")
for d in "${debs[@]}"; do
  note "deb $(basename "$d"): $(stat -c %s "$d") bytes, installed $(dpkg-deb -f "$d" Installed-Size) KiB; Depends: $(dpkg-deb -f "$d" Depends)"
done
# The three packages hold the same files; only the binary differs.
list() { dpkg-deb -c "$1" | awk '{print $1, $2, $NF}' | grep -v ' ./usr/bin/relais$'; }
for d in "${debs[@]:1}"; do
  if ! diff <(list "${debs[0]}") <(list "$d") >/dev/null; then
    note "deb $(basename "$d"): contents differ from the amd64 package:"; diff <(list "${debs[0]}") <(list "$d") || true; status=1
  fi
done
took "packages"

if command -v lintian >/dev/null; then
  step "lintian (report only)"
  lintian --tag-display-limit 0 "${debs[1]}" 2>/dev/null | sed 's/^/    /' || true
  took "lintian"
fi

step "amd64 package in a scratch Debian 12 root"
if packaging/test-deb.sh "${debs[0]}" | tee "$tdir/deb-test.txt"; then :; else status=1; fi
grep '^package:' "$tdir/deb-test.txt" >>"$summary" || { note "package: 0 passed, 1 failed (no result)"; status=1; }
took "scratch-root install"

step "field install, timed: unboxed Debian 12 → provisioned, healthy agent (README steps)"
relaisctl_bin=${RELAISCTL_BIN:-$tdir/release/relaisctl}
[ -x "$relaisctl_bin" ] || cargo build --locked --release --bin relaisctl
if packaging/field-install.sh "${debs[0]}" "$relaisctl_bin" | tee "$tdir/field-install.txt"; then :; else status=1; fi
grep '^field install: unboxed' "$tdir/field-install.txt" >>"$summary" || { note "field install: FAILED"; status=1; }
took "field install"

# Tests under qemu: debug profile (faster to build; the code under test is the same), without
# debug info (CI never runs a debugger on them and linking is much faster).
# QEMU_TEST_TARGETS: which targets run the test set (default: armv7 only). The 32-bit target is
# where the agent differs from the 64-bit host that runs the whole suite (usize, alignment,
# atomics); aarch64 is 64-bit little-endian like it, and its release binary still runs under
# qemu above. `QEMU_TEST_TARGETS="aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf"` runs
# both (about 5 more minutes).
read -r -a qemu_test_targets <<<"${QEMU_TEST_TARGETS:-armv7-unknown-linux-gnueabihf}"
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
for target in "${qemu_test_targets[@]}"; do
  step "tests under qemu: $target (${CROSS_TEST_TARGETS[*]})"
  cross_env "$target"
  if cross_tests "$target" | tee "$tdir/qemu-$target.out"; then :; else status=1; fi
  grep '^qemu ' "$tdir/qemu-$target.out" >>"$summary" || { note "qemu $CROSS_ARCH: 0 passed, 1 failed (no result)"; status=1; }
  took "qemu tests $CROSS_ARCH (build + run)"
done

echo
echo "==> ARM stage done in $(( $(date +%s) - t_stage ))s"
cat "$summary"
exit $status
