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
