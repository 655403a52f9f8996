#!/usr/bin/env bash
# PC/SC test environment: a private pcscd with the vsmartcard vpcd virtual reader.
#
#   scripts/pcsc-test-env.sh check            # exit 0 when the integration tests can run
#   scripts/pcsc-test-env.sh install          # apt packages + /run/pcscd (what CI runs once)
#   scripts/pcsc-test-env.sh start DIR [PORT] # private pcscd in the foreground, for manual tests
#
# `cargo test --test pcsc` does not need `start`: each test starts its own pcscd the same way
# (see tests/support/pcscd.rs and docs/pcsc.md). `start` is for poking at the driver by hand:
#   terminal 1: scripts/pcsc-test-env.sh start /tmp/pcsc 35963
#   terminal 2: export PCSCLITE_CSOCK_NAME=/tmp/pcsc/pcscd.comm; pcsc_scan (pcsc-tools) or relais
set -euo pipefail

VPCD_DRIVER=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
PACKAGES=(pcscd vsmartcard-vpcd libpcsclite-dev)

pcscd_bin() {
  local candidate
  for candidate in /usr/sbin/pcscd /usr/local/sbin/pcscd; do
    [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

check() {
  local ok=0
  pcscd_bin >/dev/null || { echo "missing: pcscd (apt-get install pcscd)"; ok=1; }
  [ -e "$VPCD_DRIVER" ] || { echo "missing: $VPCD_DRIVER (apt-get install vsmartcard-vpcd)"; ok=1; }
  dpkg -s libpcsclite-dev >/dev/null 2>&1 || { echo "missing: libpcsclite-dev (needed to link)"; ok=1; }
  if [ ! -d /run/pcscd ] && [ "$(id -u)" -ne 0 ]; then
    echo "missing: /run/pcscd (pcscd exits without it when not root): sudo install -d -m 0755 /run/pcscd"
    ok=1
  fi
  [ $ok -eq 0 ] && echo "pcsc test environment ready"
  return $ok
}

install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  local need=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  # pcscd writes its pid file there even when socket-activated; without the directory a
  # non-root pcscd refuses to start.
  [ -d /run/pcscd ] || $sudo install -d -m 0755 /run/pcscd
  check
}

start() {
  local dir=${1:?usage: start DIR [PORT]} port=${2:-35963}
  local pcscd
  pcscd=$(pcscd_bin) || { echo "pcscd not installed: $0 install" >&2; exit 1; }
  [ -e "$VPCD_DRIVER" ] || { echo "vsmartcard-vpcd not installed: $0 install" >&2; exit 1; }
  command -v systemd-socket-activate >/dev/null || {
    echo "systemd-socket-activate not found (package systemd): it hands pcscd a private socket" >&2
    exit 1
  }
  mkdir -p "$dir/reader.conf.d"
  # Debian's /etc/reader.conf.d/vpcd with our own port; vpcd also listens on PORT+1 (slot 2).
  cat >"$dir/reader.conf.d/vpcd" <<EOF
FRIENDLYNAME "Virtual PCD"
DEVICENAME /dev/null:$port
LIBPATH $VPCD_DRIVER
CHANNELID $(printf '0x%X' "$port")
EOF
  rm -f "$dir/pcscd.comm"
  echo "==> private pcscd: export PCSCLITE_CSOCK_NAME=$dir/pcscd.comm"
  echo "==> virtual readers 'Virtual PCD 00 00' (card emulator port $port) and 'Virtual PCD 00 01' (port $((port + 1)))"
  echo "==> pcscd starts on the first client connection, as with pcscd.socket"
  # pcscd 1.9 has its socket path compiled in but takes a socket from systemd activation.
  exec systemd-socket-activate -l "$dir/pcscd.comm" "$pcscd" --foreground --debug --apdu --config "$dir/reader.conf.d"
}

case "${1:-}" in
  check) check ;;
  install) install ;;
  start) shift; start "$@" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
