#!/usr/bin/env bash
# Builds the example image OUTDIR/busybox.tar (default build/busybox.tar): a flat rootfs tar,
# the shape `docker export` writes, made from Debian's busybox-static package.
# The tar is deterministic: the same package gives byte-identical output.
set -euo pipefail

cd "$(dirname "$0")/.."
outdir=${1:-build}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
out=$outdir/busybox.tar

say() { printf 'make-example-image.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in apt-get dpkg-deb tar; do
    command -v "$tool" >/dev/null || die "$tool is missing (this script needs a Debian system)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-example.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
umask 022

# apt-get download drops privileges to _apt when run as root; let it write to the temp dir.
mkdir "$work/deb"
if [[ $(id -u) == 0 ]] && id _apt >/dev/null 2>&1; then
    chown _apt "$work/deb"
fi
download() { (cd "$work/deb" && apt-get download -q busybox-static >&2); }
# A fresh machine may have no package lists yet: as root, fetch them once and retry.
if ! download && [[ $(id -u) == 0 ]]; then
    say "apt-get download failed; running apt-get update and trying again"
    apt-get update -q </dev/null >&2 || true
    download || true
fi
if ! compgen -G "$work/deb/busybox-static_*.deb" >/dev/null; then
    cached=$(ls -1 /var/cache/apt/archives/busybox-static_*.deb 2>/dev/null | tail -n1 || true)
    [[ -n $cached ]] || die "cannot download busybox-static (apt-get download failed, nothing in /var/cache/apt/archives); run 'apt-get update' first"
    say "apt-get download failed; using the cached $cached"
    cp "$cached" "$work/deb/"
fi
deb=$(ls -1 "$work"/deb/busybox-static_*.deb | head -n1)
say "using $(basename "$deb")"
dpkg-deb -x "$deb" "$work/pkg"
[[ -x $work/pkg/bin/busybox ]] || die "$deb does not contain bin/busybox"

rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,root,tmp,var/tmp,home}
chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
chmod 0700 "$rootfs/root"
install -m 0755 "$work/pkg/bin/busybox" "$rootfs/bin/busybox"

# One symlink per applet, all in bin/ (the default container PATH covers it).
count=0
while read -r applet; do
    [[ -n $applet && $applet != busybox && $applet != */* ]] || continue
    ln -s busybox "$rootfs/bin/$applet"
    count=$((count + 1))
done < <("$rootfs/bin/busybox" --list | LC_ALL=C sort -u)
for needed in sh echo cat id hostname sleep ls env pwd printf true false touch tty stty wc grep kill mkdir rm; do
    [[ -L $rootfs/bin/$needed ]] || die "busybox has no '$needed' applet"
done
# Scripts often say #!/usr/bin/env.
ln -s ../../bin/busybox "$rootfs/usr/bin/env"

cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
# `docker export` writes these as empty files; the runtime binds the host's over them.
: >"$rootfs/etc/hosts"
: >"$rootfs/etc/resolv.conf"
chmod 0644 "$rootfs"/etc/{passwd,group,hosts,resolv.conf}

tmp_out=$outdir/.busybox.tar.tmp
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu \
    -C "$rootfs" -cf "$tmp_out" .
mv -f "$tmp_out" "$out"
say "wrote $out ($(stat -c %s "$out") bytes, $count applets)"
