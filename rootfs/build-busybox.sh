#!/bin/sh
# build-busybox.sh BUSYBOX OUTPUT: a minimal root filesystem as a tarball.
set -eu
busybox=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
root="$here/build/busybox"

rm -rf "$root"
mkdir -p "$root"
cd "$root"
mkdir -p bin sbin usr/bin usr/sbin etc root home proc sys dev tmp var/tmp
cp "$busybox" bin/busybox
chmod 0755 bin/busybox
# Every applet as a symlink to /bin/busybox, at the path busybox lists.
for applet in $(bin/busybox --list-full); do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$(dirname "$applet")"
    ln -sf /bin/busybox "$applet"
done
cat > etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > etc/group <<'GROUP'
root:x:0:
daemon:x:1:
tty:x:5:
users:x:100:nobody
nogroup:x:65534:
GROUP
echo "kubirun" > etc/hostname
chmod 1777 tmp var/tmp
chmod 0700 root
cd "$here/build"
tar --numeric-owner --owner=0 --group=0 --sort=name -C busybox -czf "$here/$out.tmp" .
mv "$here/$out.tmp" "$here/$out"
rm -rf "$here/build"
echo "built $out"
