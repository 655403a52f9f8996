# Sourced by packaging/test-deb.sh and packaging/field-install.sh: a throwaway Debian 12 root
# (debootstrap minbase + what a store box has), entered with chroot. Root needed.
#
#   scratch_root_make DIR    # populate DIR (cached tarball, or debootstrap once) and mount /proc
#   scratch_root_drop DIR    # unmount and delete (KEEP_ROOT=1 keeps it for a post-mortem)

scratch_root_make() {
  local root=$1
  command -v debootstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
  # The bootstrapped root is cached as a tarball between runs on one machine (a fresh CI machine
  # bootstraps once, about two minutes; a rerun unpacks in seconds).
  local cache=/var/cache/relais-debootstrap
  # The package's Depends (libc6, libgcc-s1, libpcsclite1, libudev1, procps) and what a store
  # box has: systemd (sysusers, tmpfiles, systemctl), init-system-helpers (deb-systemd-helper).
  local includes=systemd,init-system-helpers,procps,libpcsclite1,libudev1,udev
  local tarball
  tarball=$cache/bookworm-minbase-$(echo "$includes" | md5sum | cut -c1-8).tar.gz
  mkdir -p "$cache"
  if [ -f "$tarball" ]; then
    echo "==> scratch root from $tarball"
    tar -C "$root" -xzf "$tarball"
  else
    echo "==> debootstrap bookworm (minbase + systemd) into $root"
    debootstrap --variant=minbase --cache-dir="$cache" --include="$includes" \
      bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1 || { tail -20 "$root.log"; return 1; }
    rm -f "$root.log"
    tar -C "$root" -czf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  fi
  # mktemp -d made it 0700 (and the cached tarball kept that): the service user could not
  # even enter its own /.
  chmod 0755 "$root"
  # A booted box has /proc (systemd-tmpfiles needs it) and a hosts file naming localhost.
  mount -t proc proc "$root/proc"
  grep -qs localhost "$root/etc/hosts" || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >>"$root/etc/hosts"
  # Like a container image build: services are never started by package scripts in here (no
  # systemd runs as PID 1), so the scripts take the not-booted paths.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod 755 "$root/usr/sbin/policy-rc.d"
}

scratch_root_drop() {
  local root=$1
  mountpoint -q "$root/proc" && umount "$root/proc"
  if [ -n "${KEEP_ROOT:-}" ]; then echo "kept $root"; else rm -rf --one-file-system "$root"; fi
}
