#!/usr/bin/env bash
# Build the `relais` Debian package for one architecture from an already built release binary,
# with dpkg-deb only (no debhelper, no cargo-deb: ADR 0010). docs/packaging.md lists the contents
# and what the maintainer scripts do.
#
#   packaging/build-deb.sh ARCH [BINARY]
#
#   ARCH     amd64, arm64 or armhf
#   BINARY   the release `relais` for ARCH; default: $CARGO_TARGET_DIR/<triple>/release/relais
#            (for amd64 also $CARGO_TARGET_DIR/release/relais, the native build)
#
# Environment: DEB_OUT_DIR (default $CARGO_TARGET_DIR/debian), DEB_REVISION (default 1),
# DEB_MAINTAINER. Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${1:?usage: packaging/build-deb.sh amd64|arm64|armhf [BINARY]}
case "$arch" in
  amd64) triple=x86_64-unknown-linux-gnu gnu=x86_64-linux-gnu ;;
  arm64) triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu ;;
  armhf) triple=armv7-unknown-linux-gnueabihf gnu=arm-linux-gnueabihf ;;
  *) echo "build-deb.sh: unknown architecture '$arch' (amd64, arm64, armhf)" >&2; exit 2 ;;
esac
tdir=${CARGO_TARGET_DIR:-target}
bin=${2:-}
if [ -z "$bin" ]; then
  bin=$tdir/$triple/release/relais
  if [ "$arch" = amd64 ] && [ ! -f "$bin" ]; then bin=$tdir/release/relais; fi
fi
[ -f "$bin" ] || { echo "build-deb.sh: no binary at $bin; build it first (scripts/cross.sh $triple --release)" >&2; exit 1; }

# The binary must be for ARCH: a mix-up here would install an unusable agent on every box.
want_machine=$(case "$arch" in amd64) echo x86-64 ;; arm64) echo aarch64 ;; armhf) echo ARM ;; esac)
if ! file -b "$bin" | grep -q "$want_machine"; then
  echo "build-deb.sh: $bin is not a $arch binary: $(file -b "$bin")" >&2; exit 1
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
deb_version="$version-${DEB_REVISION:-1}"
maintainer=${DEB_MAINTAINER:-Relais maintainers <relais@example.invalid>}
out_dir=${DEB_OUT_DIR:-$tdir/debian}
mkdir -p "$out_dir"
# Reproducible: every timestamp is the last commit's (or now, outside git).
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/debian/relais   # dpkg-shlibdeps wants the binary inside debian/<package>/
umask 022

# --- files --------------------------------------------------------------------------------------
install -Dm755 "$bin" "$root/usr/bin/relais"
# The release profile strips symbols already; strip again in case BINARY came from elsewhere.
if file -b "$root/usr/bin/relais" | grep -q 'not stripped'; then
  strip_tool=$gnu-strip; command -v "$strip_tool" >/dev/null || strip_tool=strip
  "$strip_tool" --strip-unneeded "$root/usr/bin/relais"
fi
# Debian 12 puts units and udev rules under /lib (the /usr-merge moratorium); /lib is a symlink
# to /usr/lib on merged systems, so systemd finds them either way.
install -Dm644 systemd/relais.service   "$root/lib/systemd/system/relais.service"
install -Dm644 systemd/60-relais.rules  "$root/lib/udev/rules.d/60-relais.rules"
install -Dm644 systemd/relais.sysusers  "$root/usr/lib/sysusers.d/relais.conf"
install -Dm644 systemd/relais.tmpfiles  "$root/usr/lib/tmpfiles.d/relais.conf"
install -d "$root/usr/share/relais/firmware-profiles"
install -m644 firmware-profiles/*.toml "$root/usr/share/relais/firmware-profiles/"
install -Dm644 packaging/relais.toml    "$root/etc/relais/relais.toml"
doc=$root/usr/share/doc/relais
install -Dm644 packaging/debian/copyright "$doc/copyright"
install -m644 README.md "$doc/README.md"
# What a technician needs with no network: the config reference, provisioning, operations,
# devices, and how this package behaves.
# The doctor's and the agent's messages point at these by their installed path.
for f in config.md provisioning.md operations.md firmware-profiles.md pcsc.md rfid-serial.md packaging.md snapshot-format.md; do
  [ -f "docs/$f" ] && install -m644 "docs/$f" "$doc/$f"
done
{
  printf 'relais (%s) stable; urgency=medium\n\n' "$deb_version"
  printf '  * Built from %s.\n\n' "$(git describe --always --dirty 2>/dev/null || echo 'a source tree')"
  printf ' -- %s  %s\n' "$maintainer" "$(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.Debian.gz"
chmod 644 "$doc/changelog.Debian.gz"

# --- control ------------------------------------------------------------------------------------
# Shared library dependencies from the binary itself (dpkg-shlibdeps reads the target
# architecture's symbols files, present through the multiarch -dev packages). procps: /bin/kill
# in the unit's ExecReload.
depends=""
if command -v dpkg-shlibdeps >/dev/null; then
  mkdir -p "$work/debian"
  printf 'Source: relais\n\nPackage: relais\nArchitecture: any\n' >"$work/debian/control"
  depends=$(cd "$work" && DEB_HOST_ARCH=$arch dpkg-shlibdeps -O -e debian/relais/usr/bin/relais 2>/dev/null |
            sed -n 's/^shlibs:Depends=//p') || depends=""
  rm -f "$work/debian/control"
fi
if [ -z "$depends" ]; then
  # Measured with dpkg-shlibdeps on Debian 12 for all three architectures.
  depends="libc6 (>= 2.34), libgcc-s1 (>= 4.2), libpcsclite1 (>= 1.0.0), libudev1 (>= 183)"
  echo "build-deb.sh: dpkg-shlibdeps unavailable; using the recorded Depends: $depends" >&2
fi
depends="$depends, procps"

install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s|@VERSION@|$deb_version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
    -e "s|@SIZE@|$size|" -e "s|@DEPENDS@|$depends|" packaging/debian/control.in >"$root/DEBIAN/control"
install -m644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m755 "packaging/debian/$s" "$root/DEBIAN/$s"; done
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
   LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 644 "$root/DEBIAN/md5sums"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$out_dir/relais_${deb_version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
