#!/bin/sh
# build-debian.sh OUTPUT [PACKAGE,...]: a Debian minbase root (debootstrap),
# apt's caches emptied, as a tarball with numeric owners.
#   SUITE (bookworm) and MIRROR (http://deb.debian.org/debian) may be set.
set -eu
out=$1
include=${2:-}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || {
    echo "build-debian.sh: debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
}
here=$(cd "$(dirname "$0")" && pwd)
work="$here/build/debootstrap-$$"

cleanup() {
    # debootstrap mounts /proc and /sys in the target: never rm through them.
    awk -v top="$work/" 'index($5, top) == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r mountpoint; do umount -l "$mountpoint" || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir -p "$work"
debootstrap --variant=minbase ${include:+--include="$include"} "$suite" "$work/root" "$mirror" \
    > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar --numeric-owner -czf "$out.tmp" -C "$work/root" .
mv "$out.tmp" "$out"
