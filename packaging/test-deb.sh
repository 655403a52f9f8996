#!/usr/bin/env bash
# Install a relais .deb into a scratch Debian 12 root (debootstrap minbase + systemd, chroot) and
# check what the package promises: files, account, groups, modes, conffile, enabled-not-started,
# the packaged profiles found, the default config valid, upgrade keeping local edits, purge
# keeping the data. Nothing on the host changes (the chroot is thrown away; root needed).
#
#   packaging/test-deb.sh relais_X_amd64.deb
#
# Only the host's own architecture can run its maintainer scripts in a chroot (no binfmt_misc
# in containers); ci-arm.sh checks the ARM packages' contents and binaries under qemu instead.
# Prints `package: N passed, M failed` and exits 1 on a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(realpath "${1:?usage: packaging/test-deb.sh relais_X_ARCH.deb}")
arch=$(dpkg-deb -f "$deb" Architecture)
[ "$arch" = "$(dpkg --print-architecture)" ] || { echo "test-deb.sh: $arch package on a $(dpkg --print-architecture) host; give the host's" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "test-deb.sh: needs root (debootstrap, chroot)" >&2; exit 2; }
. packaging/scratch-root.sh
root=$(mktemp -d /var/tmp/relais-deb-root.XXXXXX)
trap 'scratch_root_drop "$root"' EXIT
t0=$(date +%s)
scratch_root_make "$root"
echo "    $(( $(date +%s) - t0 ))s"

pass=0 fail=0
check() {   # check "what" command…
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); echo "ok   $what"
  else fail=$((fail + 1)); echo "FAIL $what"; fi
}
in_root() { chroot "$root" "$@"; }

cp "$deb" "$root/tmp/relais.deb"
echo "==> dpkg -i (first install)"
in_root dpkg -i /tmp/relais.deb 2>&1 | tee "$root/tmp/install.log" || true
check "dpkg -i installs it (Depends satisfied): install ok installed" \
  grep -q 'install ok installed' <(in_root dpkg-query -W -f='${Status}' relais)
check "/usr/bin/relais runs: $(in_root relais --version)" in_root relais --version
for f in /lib/systemd/system/relais.service /lib/udev/rules.d/60-relais.rules /usr/lib/sysusers.d/relais.conf \
         /usr/lib/tmpfiles.d/relais.conf /usr/share/doc/relais/copyright /usr/share/doc/relais/README.md; do
  check "file $f" test -f "$root$f"
done
check "every firmware profile in /usr/share/relais/firmware-profiles" \
  test "$(ls "$root"/usr/share/relais/firmware-profiles/*.toml | wc -l)" -eq "$(ls firmware-profiles/*.toml | wc -l)"
check "no relaisctl in the agent package" test ! -e "$root/usr/bin/relaisctl"
account_ok() {
  local uid home shell
  IFS=: read -r _ _ uid _ _ home shell < <(in_root getent passwd relais) || return 1
  [ "$uid" -lt 1000 ] && [ "$home" = /var/lib/relais ] && [[ "$shell" == */nologin ]]
}
in_group() { in_root id -nG relais | tr ' ' '\n' | grep -qx "$1"; }
check "account relais: system uid, nologin, home /var/lib/relais" account_ok
check "relais is in group dialout" in_group dialout
check "relais is in group input" in_group input
# stat inside the root: the names of its uids and gids are in its /etc/passwd, not the host's.
check "/etc/relais is 750 root:relais" test "$(in_root stat -c %a:%U:%G /etc/relais)" = "750:root:relais"
check "/etc/relais/relais.toml is 640 root:relais" test "$(in_root stat -c %a:%U:%G /etc/relais/relais.toml)" = "640:root:relais"
check "relais.toml is a conffile" grep -q /etc/relais/relais.toml <(in_root dpkg-query -W -f='${Conffiles}' relais)
check "the default config validates" in_root relais config validate /etc/relais/relais.toml
check "enabled on first install" test -L "$root/etc/systemd/system/multi-user.target.wants/relais.service"
check "not started: postinst says so" grep -q "enabled, not started" "$root/tmp/install.log"
check "data dir not created by the package (StateDirectory= does it)" test ! -e "$root/var/lib/relais"
check "the agent finds the packaged profiles" \
  grep -q '/usr/share/relais/firmware-profiles' <(in_root relais --config /etc/relais/relais.toml doctor --json 2>/dev/null || true)
check "systemd-analyze verify of the installed unit" in_root systemd-analyze verify relais.service

echo "==> local edit, then dpkg -i again (upgrade path)"
echo '# edited on the box' >>"$root/etc/relais/relais.toml"
check "reinstall/upgrade succeeds non-interactively" in_root dpkg -i /tmp/relais.deb
check "the local edit to relais.toml is kept" grep -q '# edited on the box' "$root/etc/relais/relais.toml"
in_root systemctl disable relais.service >/dev/null 2>&1 || true
in_root dpkg -i /tmp/relais.deb >/dev/null 2>&1 || true
check "an admin's disable survives an upgrade" test ! -e "$root/etc/systemd/system/multi-user.target.wants/relais.service"

echo "==> purge with data present"
mkdir -p "$root/var/lib/relais" && echo facts >"$root/var/lib/relais/outbox.db"
in_root dpkg --purge relais | tee "$root/tmp/purge.log"
check "purge removes the binary" test ! -e "$root/usr/bin/relais"
check "purge removes the conffile" test ! -e "$root/etc/relais/relais.toml"
check "purge keeps /var/lib/relais/outbox.db" test -f "$root/var/lib/relais/outbox.db"
check "purge says where the data is" grep -q "data kept in /var/lib/relais" "$root/tmp/purge.log"

echo "package: $pass passed, $fail failed ($(( $(date +%s) - t0 ))s)"
[ "$fail" -eq 0 ]
