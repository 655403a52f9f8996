# Sourced by scripts/demo.sh and scripts/test.sh: install the Debian packages a build and the tests
# need, only when missing. Extra package names may be passed as arguments.
ensure_packages() {
  local need=()
  command -v cc >/dev/null 2>&1 || need+=(build-essential)
  command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  local extra
  # libudev: serial port enumeration with USB ids; libpcsclite: the PC/SC card reader driver.
  for extra in libudev-dev libpcsclite-dev "$@"; do
    dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing ${need[*]}"
  $sudo apt-get update -qq || echo "apt-get update reported errors; installing from the indexes it could read" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

ensure_rust() {
  command -v cargo >/dev/null 2>&1 && return 0
  echo "relais: cargo not found. Install rustup (https://rustup.rs); rust-toolchain.toml pins 1.95.0." >&2
  exit 1
}

# rumqttd, a second MQTT 5.0 broker implementation for tests/interop.rs (docs/contract.md §10).
# Built once per machine into ~/.cache (a debug build: about two minutes on two cores, then
# nothing); without --locked, as its own lock pins a `metrics` release today's rustc refuses.
RUMQTTD_VERSION=0.20.0
ensure_rumqttd() {
  local root="$HOME/.cache/relais-tools/rumqttd-$RUMQTTD_VERSION"
  [ -x "$root/bin/rumqttd" ] && return 0
  echo "==> building rumqttd $RUMQTTD_VERSION for the interop tests (once per machine)"
  local build
  build=$(mktemp -d)
  CARGO_TARGET_DIR="$build" cargo install --quiet --debug rumqttd --version "$RUMQTTD_VERSION" \
    --no-default-features --root "$root" \
    || echo "rumqttd did not build: tests/interop.rs skips it" >&2
  rm -rf "$build"
}
