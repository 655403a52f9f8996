#!/usr/bin/env bash
# Cross builds for the store boxes (ARM) with rustup's target std, Debian 12's cross gcc and
# the target's libraries (multiarch runtime, unpacked -dev files), and their tests under qemu
# user-mode emulation. docs/packaging.md
# explains the setup; ADR 0010 explains why this and not `cross` (cross.toml is for people who
# do use `cross` with Docker).
#
#   scripts/cross.sh TARGET [--release] [--tests] [--no-install] [-- CARGO BUILD ARGS…]
#
#   TARGET        aarch64-unknown-linux-gnu (Debian arm64) or armv7-unknown-linux-gnueabihf
#                 (Debian armhf); x86_64-unknown-linux-gnu (amd64) builds natively.
#   --release     build `relais` with the release profile (default: debug).
#   --tests       also build the test binaries (debug) and run the host-independent part of the
#                 suite under qemu; prints `qemu <arch>: N passed, M failed` and exits 1 on a failure.
#   --no-install  do not touch the machine (no rustup, no apt-get); fail if something is missing.
#   -- ARGS       replace the default `--bin relais` (e.g. `-- --bins` for relaisctl too).
#
# Everything is set in this process's environment (linker, C compiler, pkg-config, qemu runner),
# per target triple, so a developer's native build is unaffected and no .cargo/config.toml is
# needed. Sourcing the file (`. scripts/cross.sh`) only defines the cross_* functions.
# Builds go to $CARGO_TARGET_DIR (default: target/), under target/<triple>/.

# --- target table -------------------------------------------------------------------------------
# Sets CROSS_DEB_ARCH (Debian architecture), CROSS_GNU (GNU triplet: gcc prefix and multiarch
# directory), CROSS_QEMU (user-mode emulator; empty when native), CROSS_ARCH (short name).
cross_target() {
  case "$1" in
    aarch64-unknown-linux-gnu)
      CROSS_DEB_ARCH=arm64 CROSS_GNU=aarch64-linux-gnu CROSS_QEMU=qemu-aarch64-static CROSS_ARCH=aarch64 ;;
    armv7-unknown-linux-gnueabihf)
      # Debian armhf = ARMv7-A, VFPv3-D16, Thumb-2, hard float: exactly Rust's armv7 gnueabihf.
      CROSS_DEB_ARCH=armhf CROSS_GNU=arm-linux-gnueabihf CROSS_QEMU=qemu-arm-static CROSS_ARCH=armv7 ;;
    x86_64-unknown-linux-gnu)
      CROSS_DEB_ARCH=amd64 CROSS_GNU=x86_64-linux-gnu CROSS_QEMU="" CROSS_ARCH=x86_64 ;;
    *)
      echo "cross.sh: unknown target '$1' (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf, x86_64-unknown-linux-gnu)" >&2
      return 2 ;;
  esac
}

# The emulator command line. `-L /`: the target's ld.so and libc are the multiarch libc6:ARCH
# (/lib/ld-linux-aarch64.so.1, /lib/aarch64-linux-gnu/), installed with libpcsclite1:ARCH.
# NOT `-L /usr/aarch64-linux-gnu`: that tree holds libc6-ARCH-cross's ld.so (2.36-8cross1) while
# libc.so.6 would still come from the multiarch libc6 (2.36-9+deb12u…); glibc's ld.so and libc
# must be one build, and the mix hangs every new thread (pthread_create loops in the stack cache).
cross_qemu() { echo "$CROSS_QEMU -L /"; }

cross_is_native() { [ "$CROSS_DEB_ARCH" = "$(dpkg --print-architecture)" ]; }

cross_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- install (idempotent) -----------------------------------------------------------------------
# cross_install TARGET…: rustup's std for each target; the cross gcc (linker, and C compiler for
# ring and the bundled SQLite); the target's runtime libc6, libudev1 and libpcsclite1 through
# multiarch (what the binary loads under qemu, and what dpkg-shlibdeps reads); the link-time
# files of libudev-dev and libpcsclite-dev (see cross_dev_files); qemu-user-static for the tests.
# Nothing is installed that is already there.
cross_install() {
  local target need=() p new_arch=0
  . "$(dirname "${BASH_SOURCE[0]}")/deps.sh"
  ensure_rust
  for target in "$@"; do
    cross_target "$target" || return
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
      echo "==> rustup target add $target"
      rustup target add "$target"
    fi
    cross_is_native && continue
    if ! dpkg --print-foreign-architectures | grep -qx "$CROSS_DEB_ARCH"; then
      echo "==> dpkg --add-architecture $CROSS_DEB_ARCH"
      cross_sudo dpkg --add-architecture "$CROSS_DEB_ARCH"
      new_arch=1
    fi
    for p in "gcc-$CROSS_GNU" "libc6-dev-$CROSS_DEB_ARCH-cross" "libc6:$CROSS_DEB_ARCH" \
             "libudev1:$CROSS_DEB_ARCH" "libpcsclite1:$CROSS_DEB_ARCH" qemu-user-static; do
      dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
  done
  # dpkg-dev: dpkg-shlibdeps for the packages' Depends; file: build-deb.sh checks the binary.
  for p in dpkg-dev pkg-config file; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ] || [ "$new_arch" -eq 1 ]; then
    # A new architecture needs its package lists. One mirror index out of sync (seen here:
    # "File has unexpected size … Mirror sync in progress?" for bookworm-security armhf) must
    # not stop us when the packages we need are in the others: the install is what must succeed.
    cross_sudo apt-get update -qq || echo "cross.sh: apt-get update reported errors; trying the install anyway" >&2
  fi
  if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive cross_sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  for target in "$@"; do
    cross_target "$target"
    cross_is_native || cross_dev_files "$target"
  done
}

# Where the target's link-time files live: $CARGO_TARGET_DIR/cross-dev/<deb arch>.
cross_dev_root() {
  local dir=${CARGO_TARGET_DIR:-target}
  [[ "$dir" = /* ]] || dir="$PWD/$dir"
  echo "$dir/cross-dev/$CROSS_DEB_ARCH"
}

# libudev-dev:ARCH and libpcsclite-dev:ARCH unpacked (dpkg -x) into cross_dev_root, with the
# runtime packages their .so links point at, all at the versions of the installed multiarch
# runtime libraries. They are deliberately not *installed*: two installed instances of
# libudev-dev make `dpkg -s libudev-dev` fail as ambiguous, which scripts/deps.sh (and any
# "is it installed?" check written the same way) reads as "missing" and then tries to install.
# The .pc files are used with PKG_CONFIG_SYSROOT_DIR; nothing else from them is needed (the
# -sys crates declare their own FFI, no headers are compiled).
cross_dev_files() {
  cross_target "$1" || return
  local root want have tmp p v
  root=$(cross_dev_root)
  want=""
  for p in libudev1 libpcsclite1; do
    v=$(dpkg-query -W -f='${Version}' "$p:$CROSS_DEB_ARCH" 2>/dev/null) || {
      echo "cross.sh: $p:$CROSS_DEB_ARCH is not installed (run without --no-install)" >&2; return 1; }
    want+="$p=$v "
  done
  have=$(cat "$root/.versions" 2>/dev/null || true)
  [ "$have" = "$want" ] && return 0
  echo "==> unpacking libudev-dev:$CROSS_DEB_ARCH and libpcsclite-dev:$CROSS_DEB_ARCH into $root"
  tmp=$(mktemp -d)
  local pkgs=()
  for p in $want; do
    local name=${p%%=*} ver=${p#*=}
    pkgs+=("$name:$CROSS_DEB_ARCH=$ver")
    case "$name" in libudev1) pkgs+=("libudev-dev:$CROSS_DEB_ARCH=$ver") ;; libpcsclite1) pkgs+=("libpcsclite-dev:$CROSS_DEB_ARCH=$ver") ;; esac
  done
  (cd "$tmp" && apt-get download -qq "${pkgs[@]}") || { rm -rf "$tmp"; return 1; }
  rm -rf "$root" && mkdir -p "$root"
  for p in "$tmp"/*.deb; do dpkg -x "$p" "$root"; done
  rm -rf "$tmp"
  echo "$want" >"$root/.versions"
}

# --- environment --------------------------------------------------------------------------------
# Exports the per-target variables cargo, cc-rs and pkg-config-rs read. Host build scripts and
# proc macros keep the native compiler and pkg-config: every variable names the target triple.
cross_env() {
  cross_target "$1" || return
  local target=$1 up=${1//-/_}
  local upper
  upper=$(echo "$up" | tr '[:lower:]' '[:upper:]')
  cross_is_native && return 0
  export "CARGO_TARGET_${upper}_LINKER=$CROSS_GNU-gcc"
  # ring's assembly and C, SQLite (bundled): cc-rs picks these for the target only.
  export "CC_${up}=$CROSS_GNU-gcc" "AR_${up}=$CROSS_GNU-ar"
  # pcsc-sys and libudev-sys ask pkg-config: only the target's .pc files (cross_dev_files),
  # prefixed with their root, so they answer -L<root>/usr/lib/<triplet> -ludev.
  local root
  root=$(cross_dev_root)
  export "PKG_CONFIG_ALLOW_CROSS_${up}=1"
  export "PKG_CONFIG_LIBDIR_${up}=$root/usr/lib/$CROSS_GNU/pkgconfig:$root/usr/share/pkgconfig"
  export "PKG_CONFIG_SYSROOT_DIR_${up}=$root"
  # `cargo test/run --target T` run the binaries through qemu.
  export "CARGO_TARGET_${upper}_RUNNER=$(cross_qemu)"
}

# --- qemu tests ---------------------------------------------------------------------------------
# The part of the suite that needs no host service (no broker, no pcscd, no systemd, no
# Chromium): the library's unit tests, the decode conformance test over ../shared/testdata, the
# config tests and the firmware profile tests. conformance and config spawn the `relais` binary
# (CARGO_BIN_EXE_relais, baked in at compile time): with no binfmt_misc registration (containers,
# CI) the kernel cannot exec an ARM ELF, so that path gets a two-line shell wrapper that execs
# qemu on the real binary (kept beside it as relais.elf). Cargo puts the ELF back on the next build.
# Without the `central` feature: the store box runs the agent only (central's code is tested on
# the host, where it runs).
CROSS_TEST_TARGETS=(--no-default-features --lib --test conformance --test config --test profiles)

cross_tests() {
  cross_target "$1" || return
  local target=$1 dir=${CARGO_TARGET_DIR:-target}
  local json bins=() b
  json=$(mktemp)
  echo "==> cargo test --target $target --no-run ${CROSS_TEST_TARGETS[*]}"
  cargo test --locked --target "$target" --no-run "${CROSS_TEST_TARGETS[@]}" \
    --message-format=json-render-diagnostics >"$json" || { rm -f "$json"; return 1; }
  while IFS= read -r b; do bins+=("$b"); done < <(
    # Test harnesses only (profile.test), not the `relais`/`relaisctl` binaries also built.
    python3 -c 'import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m["profile"]["test"] and m.get("executable"):
        print(m["executable"])' "$json" | sort -u)
  rm -f "$json"
  local exe="$dir/$target/debug/relais"
  [[ "$exe" = /* ]] || exe="$PWD/$exe"
  if [ -n "$CROSS_QEMU" ] && head -c4 "$exe" | grep -q 'ELF'; then
    cp -f "$exe" "$exe.elf"
    rm -f "$exe"   # a hard link to deps/relais-<hash>: replace it, do not write through it
    printf '#!/bin/sh\n# cross.sh: run the %s binary under qemu (no binfmt_misc needed)\nexec %s "%s.elf" "$@"\n' \
      "$target" "$(cross_qemu)" "$exe" >"$exe"
    chmod 755 "$exe"
  fi
  local log passed=0 failed=0 status=0 t0
  log="$dir/qemu-$CROSS_ARCH-tests.txt"
  : >"$log"
  t0=$(date +%s)
  for b in "${bins[@]}"; do
    echo "==> qemu: $(basename "$b")" | tee -a "$log"
    # The conformance test prints its score per vector file: show it.
    local args=()
    case "$(basename "$b")" in conformance-*) args=(--nocapture) ;; esac
    # Cargo runs tests from the package root; the tests find firmware-profiles/ and
    # ../shared/testdata from there (and from CARGO_MANIFEST_DIR).
    if [ -n "$CROSS_QEMU" ]; then
      $(cross_qemu) "$b" "${args[@]}" 2>&1 | tee -a "$log" || status=1
    else
      "$b" "${args[@]}" 2>&1 | tee -a "$log" || status=1
    fi
  done
  read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) {
      if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
      END { printf "%d %d\n", p, f }' "$log")
  # No test binary ran, or one died before its result line: count it as a failure.
  [ "$passed" -gt 0 ] || status=1
  echo "qemu $CROSS_ARCH: $passed passed, $failed failed ($(( $(date +%s) - t0 ))s, ${#bins[@]} test binaries; log $log)"
  return $status
}

# --- command line -------------------------------------------------------------------------------
cross_main() {
  set -euo pipefail
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  local target="" release=0 tests=0 install=1 extra=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --release) release=1 ;;
      --tests) tests=1 ;;
      --no-install) install=0 ;;
      --) shift; extra=("$@"); break ;;
      -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; return 0 ;;
      -*) echo "cross.sh: unknown option $1" >&2; return 2 ;;
      *) target=$1 ;;
    esac
    shift
  done
  [ -n "$target" ] || { echo "usage: scripts/cross.sh TARGET [--release] [--tests] [--no-install] [-- ARGS]" >&2; return 2; }
  cross_target "$target"
  if [ "$install" -eq 1 ]; then cross_install "$target"; elif ! cross_is_native; then cross_dev_files "$target"; fi
  cross_env "$target"
  export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
  # The agent as the box runs it: without central's side (the `central` feature).
  [ ${#extra[@]} -gt 0 ] || extra=(--no-default-features --bin relais)
  local profile=() out=debug
  if [ "$release" -eq 1 ]; then profile=(--release) out=release; fi
  local t0
  t0=$(date +%s)
  echo "==> cargo build --target $target ${profile[*]} ${extra[*]}"
  cargo build --locked --target "$target" "${profile[@]}" "${extra[@]}"
  local bin="${CARGO_TARGET_DIR:-target}/$target/$out/relais"
  if [ -f "$bin" ]; then
    echo "built $bin: $(stat -c %s "$bin") bytes in $(( $(date +%s) - t0 ))s"
    if [ -n "$CROSS_QEMU" ]; then
      echo "under qemu: $($(cross_qemu) "$bin" --version)"
    fi
  fi
  if [ "$tests" -eq 1 ]; then
    cross_tests "$target"
  fi
}

# (exit inside the if: bash has parsed the whole block, so editing this file while it runs is safe)
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  cross_main "$@"
  exit $?
fi
