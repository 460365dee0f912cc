#!/usr/bin/env bash
# The aarch64 stub on a real arm64 kernel: Debian's arm64 cloud kernel booted under
# qemu-system-aarch64 (TCG, no KVM needed) on an initramfs that holds an arm64 busybox,
# Debian's arm64 newuidmap/newgidmap and setpriv (with their libraries) and arm64 images packed HERE,
# on x86_64, by dist/binctr-pack. Its /init runs the checks as an unprivileged user and
# prints one line per check on the serial console; tests/tests/arm64.rs reads them.
#
#   arm64-vm.sh build   download and make what does not depend on dist/ (cached in
#                       build/arm64/; remove a file to remake it)
#   arm64-vm.sh run     build, pack the images with dist/binctr-pack, make the initramfs,
#                       boot, and print the serial console (exit 0 when the VM ran to the end)
#
# Why a VM: qemu-user is not enough (its clone() refuses namespace flags with EINVAL and
# it has no openat2), so the stub needs a real arm64 kernel.
# Why no qemu-user/binfmt: the arm64 Debian trees are made with mmdebstrap
# --variant=extract, which unpacks packages without running their maintainer scripts (so
# no arm64 program runs on the host); the few files those scripts would make
# (/etc/passwd, /etc/group, /bin/sh) are written here.
# Network: none beyond the Debian package archive (apt-get download, mmdebstrap).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
out=${BINCTR_FIXTURES:-$root/build}/arm64
dist=${BINCTR_DIST:-$root/dist}
# TCG on 2 cores: the kernel boots in ~10 s, the checks take a minute or two.
vm_timeout=${BINCTR_ARM64_TIMEOUT:-600}
suite=bookworm

say() { printf 'arm64-vm.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

mirror() {
    local m
    m=$(
        {
            grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
            grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                sed 's/\[[^]]*\]//' | awk '{print $2}'
        } | grep -E '/debian/?$' | head -n1 || true
    )
    printf '%s' "${m:-http://deb.debian.org/debian}"
}

need_tools() {
    local missing=()
    for tool in "$@"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) || die "missing: ${missing[*]} (scripts/test.sh installs them: qemu-system-arm, mmdebstrap, cpio)"
}

# apt-get download of arm64 packages needs the arm64 package lists.
ensure_arm64_lists() {
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        [[ $(id -u) == 0 ]] || die "dpkg has no arm64 architecture: as root, dpkg --add-architecture arm64 && apt-get update"
        say "adding the arm64 architecture to dpkg (package lists only; nothing arm64 is installed)"
        dpkg --add-architecture arm64
        apt-get update -q </dev/null >&2
    elif ! apt-cache show busybox-static:arm64 >/dev/null 2>&1; then
        [[ $(id -u) == 0 ]] || die "no arm64 package lists: as root, apt-get update"
        apt-get update -q </dev/null >&2
    fi
}

# Downloads the arm64 package $1 into $2 (apt-get download, as _apt when root).
download() {
    local pkg=$1 dir=$2
    mkdir -p "$dir"
    chmod 0755 "$(dirname "$dir")"
    if [[ $(id -u) == 0 ]] && id _apt >/dev/null 2>&1; then chown _apt "$dir"; fi
    (cd "$dir" && apt-get download -q "$pkg:arm64" </dev/null >&2) ||
        die "apt-get download $pkg:arm64 failed (see above)"
}

# The kernel: Debian's cloud arm64 kernel (virtio, PL011 serial; small), the version the
# linux-image-cloud-arm64 metapackage points at, unsigned flavour. overlayfs is a module
# there: its overlay.ko goes into the initramfs.
build_kernel() {
    [[ -s $out/vmlinuz && -s $out/overlay.ko && -s $out/kernel-version ]] && return
    local dep work
    dep=$(apt-cache depends linux-image-cloud-arm64:arm64 2>/dev/null |
        awk '/Depends: linux-image-/{print $2; exit}')
    dep=${dep%:arm64}
    [[ -n $dep ]] || die "apt-cache knows no linux-image-cloud-arm64:arm64 (apt-get update?)"
    work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-arm64-kernel.XXXXXX")
    download "$dep-unsigned" "$work/deb"
    dpkg-deb -x "$work"/deb/*.deb "$work/x"
    local version=${dep#linux-image-}
    install -m 0644 "$work/x/boot/vmlinuz-$version" "$out/.vmlinuz.tmp"
    local ko
    ko=$(find "$work/x/lib/modules/$version" -name 'overlay.ko*' | head -n1)
    [[ -n $ko ]] || die "$dep has no overlay.ko"
    case $ko in
        *.xz) xz -dc "$ko" >"$out/.overlay.ko.tmp" ;;
        *.zst) zstd -dc "$ko" >"$out/.overlay.ko.tmp" ;;
        *) cp "$ko" "$out/.overlay.ko.tmp" ;;
    esac
    mv -f "$out/.vmlinuz.tmp" "$out/vmlinuz"
    mv -f "$out/.overlay.ko.tmp" "$out/overlay.ko"
    printf '%s\n' "$dep-unsigned" >"$out/kernel-version"
    rm -rf "$work"
    say "kernel: $dep-unsigned"
}

# An arm64 tree of Debian packages (and their dependencies), unpacked, no script run.
extract_tree() {
    local dest=$1 include=$2
    local mode=root
    [[ $(id -u) == 0 ]] || mode=unshare
    rm -rf "$dest"
    SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --variant=extract --mode="$mode" --arch=arm64 \
        --include="$include" "$suite" "$dest" "$(mirror)" </dev/null >&2 ||
        die "mmdebstrap --arch=arm64 --variant=extract failed (see above)"
    rm -rf "$dest"/usr/share/{doc,man,info,locale} "$dest"/var/cache/apt "$dest"/var/lib/apt/lists
}

# The VM's own tools: Debian's newuidmap/newgidmap (setuid root, dynamically linked:
# their arm64 libraries come along), setpriv (busybox's cannot change uid) and
# busybox-static.
build_tools() {
    [[ -s $out/tools.tar ]] && return
    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-arm64-tools.XXXXXX")
    extract_tree "$work/tree" uidmap,busybox-static,util-linux
    [[ -u $work/tree/usr/bin/newuidmap ]] || die "newuidmap is missing or not setuid in the arm64 tree"
    tar -C "$work/tree" --numeric-owner -cf "$out/.tools.tar.tmp" .
    mv -f "$out/.tools.tar.tmp" "$out/tools.tar"
    rm -rf "$work"
    say "tools: uidmap, busybox-static, util-linux (arm64)"
}

# Two arm64 images, as flat root filesystem tars (what `docker export` writes): the packer
# must tell their CPU from their programs.
#   busybox-arm64.tar: busybox-static, one symlink per applet, as make-example-image.sh.
#   debian-arm64.tar:  Debian's dash, coreutils and their libraries (ld.so, libc).
build_images() {
    local work
    if [[ ! -s $out/busybox-arm64.tar ]]; then
        work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-arm64-busybox.XXXXXX")
        download busybox-static "$work/deb"
        dpkg-deb -x "$work"/deb/*.deb "$work/x"
        local r=$work/rootfs
        mkdir -p "$r"/{bin,etc,proc,sys,dev,root,tmp,home,data}
        chmod 1777 "$r/tmp"
        install -m 0755 "$work/x/bin/busybox" "$r/bin/busybox"
        # The applet list of an arm64 busybox cannot be asked on x86_64: these are the
        # ones the checks use.
        for applet in sh echo cat id uname hostname sleep ls env pwd printf true false \
            touch grep mkdir rm unshare wc stat test; do
            ln -s busybox "$r/bin/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
        : >"$r/etc/hosts"
        : >"$r/etc/resolv.conf"
        tar -C "$r" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
            -cf "$out/.busybox-arm64.tar.tmp" .
        mv -f "$out/.busybox-arm64.tar.tmp" "$out/busybox-arm64.tar"
        rm -rf "$work"
        say "image: busybox-arm64.tar"
    fi
    if [[ ! -s $out/debian-arm64.tar ]]; then
        work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-arm64-debian.XXXXXX")
        extract_tree "$work/tree" base-files,base-passwd,dash,coreutils,grep
        local r=$work/tree
        # What the maintainer scripts would have made.
        cp "$r/usr/share/base-passwd/passwd.master" "$r/etc/passwd"
        cp "$r/usr/share/base-passwd/group.master" "$r/etc/group"
        [[ -e $r/bin/sh || -L $r/bin/sh ]] || ln -s dash "$r/bin/sh"
        mkdir -p "$r"/{proc,sys,dev,tmp,root,data}
        chmod 1777 "$r/tmp"
        tar -C "$r" --sort=name --numeric-owner --mtime=@0 -cf "$out/.debian-arm64.tar.tmp" .
        mv -f "$out/.debian-arm64.tar.tmp" "$out/debian-arm64.tar"
        rm -rf "$work"
        say "image: debian-arm64.tar ($(($(stat -c %s "$out/debian-arm64.tar") / 1024 / 1024)) MiB)"
    fi
}

build() {
    need_tools apt-get apt-cache dpkg-deb mmdebstrap tar
    mkdir -p "$out"
    ensure_arm64_lists
    build_kernel
    build_tools
    build_images
}

# The init of the VM: stage 1 copies the initramfs onto a tmpfs and switch_roots there
# (pivot_root, which the stub uses, fails with EINVAL on an initramfs root); stage 2
# prepares the machine, makes the user `tester` with subordinate ids, and runs the checks.
# Each check prints `@@ NAME rc=CODE out=OUTPUT` (newlines as '|').
write_init() {
    cat >"$1" <<'INIT'
#!/bin/busybox sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
bb=/bin/busybox
if [ ! -e /.on-tmpfs ]; then
    $bb mount -t proc proc /proc
    $bb mkdir -p /newroot
    $bb mount -t tmpfs -o size=900m,mode=0755 tmpfs /newroot
    for d in /*; do
        case $d in /proc|/newroot|/sys|/dev) continue ;; esac
        $bb cp -a "$d" /newroot/
    done
    $bb mkdir -p /newroot/proc /newroot/sys /newroot/dev
    $bb touch /newroot/.on-tmpfs
    $bb umount /proc
    exec $bb switch_root /newroot /init
fi
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t devtmpfs dev /dev
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
$bb mount -t tmpfs -o mode=1777 shm /dev/shm
$bb mkdir -p /tmp && $bb chmod 1777 /tmp
$bb hostname arm64-vm
echo "@@ boot kernel=$($bb uname -r) machine=$($bb uname -m) cpus=$($bb nproc) uptime=$($bb cut -d' ' -f1 /proc/uptime)"
if $bb insmod /lib/modules/overlay.ko; then echo "@@ overlay rc=0"; else echo "@@ overlay rc=$?"; fi

# The unprivileged user, with 65536 subordinate ids.
echo 'tester:x:1000:1000:tester:/home/tester:/bin/sh' >>/etc/passwd
echo 'tester:x:1000:' >>/etc/group
echo 'tester:100000:65536' >/etc/subuid
echo 'tester:100000:65536' >/etc/subgid
$bb mkdir -p /home/tester/vol
$bb chown -R 1000:1000 /home/tester
$bb chmod 0755 /images
$bb chmod 0755 /images/*
echo 'from the host volume' >/home/tester/vol/hello
$bb chown 1000:1000 /home/tester/vol/hello

# as_tester NAME CMD...: runs CMD as tester (no capabilities, no privileges).
as_tester() {
    name=$1
    shift
    start=$($bb date +%s)
    out=$(cd /home/tester && $bb env -i PATH=$PATH HOME=/home/tester USER=tester TERM=dumb \
        /usr/bin/setpriv --reuid=1000 --regid=1000 --clear-groups "$@" </dev/null 2>&1)
    rc=$?
    end=$($bb date +%s)
    echo "@@ $name rc=$rc secs=$((end - start)) out=$(printf '%s' "$out" | $bb tr '\n' '|')"
}

bbi=/images/busybox.bin
deb=/images/debian.bin
# The cache's entries (name:inode): one after the first run, the same one after the
# warm runs of the same mapping.
cache_entries() {
    as_tester "$1" $bb sh -c 'cd /home/tester/.cache/binctr && for d in * images/* layers/*; do case $d in images|layers) continue;; esac; if [ -d "$d" ]; then stat -c "%n:%i" "$d"; fi; done'
}

as_tester id-host $bb id
# Subordinate ids: the first run extracts, the later ones find the same cache entry.
as_tester first-run-subid $bbi --userns subid uname -m
cache_entries cache-after-first
as_tester warm-run-subid $bbi --userns subid uname -m
as_tester id-subid $bbi --userns subid id
as_tester id-subid-user $bbi --userns subid -u nobody id
as_tester maps-subid $bbi --userns subid cat /proc/self/uid_map
as_tester exit-3 $bbi --userns subid sh -c 'exit 3'
as_tester missing-command $bbi --userns subid no-such-command
as_tester read-only $bbi --userns subid --read-only sh -c 'touch /x'
as_tester writable $bbi --userns subid sh -c 'echo w >/x && cat /x'
as_tester volume $bbi --userns subid -v /home/tester/vol:/data cat /data/hello
as_tester seccomp-status $bbi --userns subid grep Seccomp: /proc/self/status
as_tester seccomp-unshare $bbi --userns subid unshare -U true
as_tester seccomp-unconfined $bbi --userns subid --security-opt seccomp=unconfined unshare -U true
cache_entries cache-after-warm
# The holder of the subordinate-id namespace runs the stub's tiny aarch64 program from a
# memfd (not the packed file): its exe, name and state, read as root.
holder=
for p in /proc/[0-9]*; do
    if [ "$($bb cat "$p/comm" 2>/dev/null)" = binctr-userns ]; then
        holder="$holder$($bb readlink "$p/exe")|$($bb cat "$p/comm")|$($bb sed -n "s/^State:[[:space:]]*//p" "$p/status")|"
    fi
done
echo "@@ holder rc=0 secs=0 out=$holder"
# A single mapping (tester is the only id).
as_tester id-single $bbi --userns single id
as_tester uname-single $bbi --userns single uname -m
as_tester maps-single $bbi --userns single cat /proc/self/uid_map
as_tester exit-3-single $bbi --userns single sh -c 'exit 3'
as_tester missing-command-single $bbi --userns single no-such-command
as_tester read-only-single $bbi --userns single --read-only sh -c 'touch /x'
as_tester volume-write-single $bbi --userns single -v /home/tester/vol:/data sh -c 'echo back >/data/back'
as_tester volume-written $bb cat /home/tester/vol/back
as_tester seccomp-unshare-single $bbi --userns single unshare -U true
# Debian (dash, coreutils, glibc).
as_tester debian-first-run $deb uname -m
as_tester debian-id-subid $deb --userns subid id
as_tester debian-id-single $deb --userns single id
as_tester debian-os $deb cat /etc/debian_version
as_tester debian-exit $deb sh -c 'exit 3'
as_tester debian-missing-command $deb no-such-command
as_tester debian-read-only $deb --read-only sh -c 'touch /x'
as_tester debian-volume $deb -v /home/tester/vol:/data cat /data/hello
as_tester debian-seccomp $deb grep Seccomp: /proc/self/status
echo "@@ done"
$bb sync
$bb poweroff -f
INIT
    chmod 0755 "$1"
}

run() {
    need_tools qemu-system-aarch64 cpio gzip timeout
    build
    [[ -x $dist/binctr-pack ]] || die "$dist/binctr-pack is missing: run scripts/build.sh"
    # Global: the EXIT trap runs after this function has returned.
    vm_work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-arm64-vm.XXXXXX")
    trap 'rm -rf "$vm_work"' EXIT
    local work=$vm_work
    # Packed on this x86_64 machine, with no flag naming the CPU: the packer must pick
    # the aarch64 stub from the images' programs.
    mkdir -p "$work/initrd/images"
    "$dist/binctr-pack" "$out/busybox-arm64.tar" -o "$work/initrd/images/busybox.bin" --name busybox
    "$dist/binctr-pack" "$out/debian-arm64.tar" -o "$work/initrd/images/debian.bin" --name debian
    for f in busybox debian; do
        "$dist/binctr-pack" inspect "$work/initrd/images/$f.bin" | grep '^stub' | sed "s/^/arm64-vm.sh: $f.bin: /" >&2
    done
    tar -C "$work/initrd" -xf "$out/tools.tar"
    mkdir -p "$work/initrd/lib/modules"
    cp "$out/overlay.ko" "$work/initrd/lib/modules/overlay.ko"
    write_init "$work/initrd/init"
    (cd "$work/initrd" && find . -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc --owner=0:0 --quiet) | gzip -1 >"$work/initrd.img"
    say "initramfs: $(($(stat -c %s "$work/initrd.img") / 1024 / 1024)) MiB; booting $(cat "$out/kernel-version") (timeout ${vm_timeout}s)"
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$vm_timeout" qemu-system-aarch64 -M virt -cpu max -smp 2 -m 1024 \
        -nographic -nic none -no-reboot -kernel "$out/vmlinuz" -initrd "$work/initrd.img" \
        -append "console=ttyAMA0 rdinit=/init panic=-1 quiet" </dev/null || rc=$?
    say "qemu exited with $rc after $((SECONDS - start)) s"
    ((rc == 0)) || die "qemu-system-aarch64 failed or timed out (exit $rc)"
}

case ${1:-run} in
    build) build ;;
    run) run ;;
    *) die "usage: $0 [build|run]" ;;
esac
