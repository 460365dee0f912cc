#!/usr/bin/env bash
# Builds OUTDIR/python.tar (default build/python.tar): a Debian bookworm root filesystem
# (mmdebstrap --variant=minbase) with python3, CPython's regression tests
# (libpython3.11-testsuite: /usr/lib/python3.11/test, with python3-venv and netbase, which
# some of them need), iputils-ping and libcap2-bin, for
# tests/tests/posix.rs (issue 11: POSIX behaves as on the host, checked by CPython's own
# suite; file capabilities survive packing and extraction).
#
# What the tests rely on, checked here before the tar is written:
#   /usr/bin/python3 runs, and /usr/lib/python3.11/test holds test_os.py and friends;
#   /usr/bin/ping carries the file capability cap_net_raw (security.capability, set by
#   iputils-ping's postinst through libcap2-bin's setcap), and /usr/sbin/getcap shows it.
#
# The tar is POSIX (pax) so it can carry xattrs: security.capability is kept (GNU tar keeps
# only user.* unless told). Every owner kept, numeric ids, sorted names, no atime/ctime
# records; files keep their packages' mtimes, and what the build itself wrote (maintainer
# scripts, .pyc files, directories) gets a fixed date: the same packages give
# byte-identical output. Not the epoch: zipfile refuses timestamps before 1980 (test_zipfile
# zips the suite's own files), and a .py whose mtime changed would make every .pyc stale.
# Idempotent: nothing is rebuilt while this script is unchanged and the tar exists (remove
# OUTDIR/python.tar to rebuild with newer packages). The downloaded .debs are kept in
# OUTDIR/.python-debs, so a rebuild (a changed script) downloads only what changed.
# Must run as root (mmdebstrap's root mode keeps owners and file capabilities); installs
# mmdebstrap when it is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
outdir=${1:-build}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
out=$outdir/python.tar
stamp_file=$outdir/.python-image.stamp
debs=$outdir/.python-debs

say() { printf 'make-python-image.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

stamp=$(sha256sum "$0" | cut -d' ' -f1)
if [[ -s $out && $(cat "$stamp_file" 2>/dev/null) == "$stamp" ]]; then
    say "up to date: $out ($(($(stat -c %s "$out") / 1024 / 1024)) MiB); remove it to rebuild"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root: the image's files belong to several users and ping carries a file capability"
missing=()
for pair in mmdebstrap:mmdebstrap tar:tar sha256sum:coreutils getcap:libcap2-bin; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2 || {
        apt-get update -q </dev/null >&2
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2
    }
fi

# The Debian mirror apt uses on this machine (as scripts/make-debian-rootfs.sh finds it),
# else deb.debian.org.
mirror=$(
    {
        grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
        grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
            sed 's/\[[^]]*\]//' | awk '{print $2}'
    } | grep -E '/debian/?$' | head -n1 || true
)
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-python.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
umask 022
rootfs=$work/rootfs
mkdir -p "$debs"

# python3-venv: ensurepip, which test_venv imports (Debian splits it from the stdlib);
# netbase: /etc/services and /etc/protocols, which test_socket's getservbyname and
# getaddrinfo(host, "http") read (every Debian host has them; minbase does not).
packages=python3,libpython3.11-testsuite,python3-venv,netbase,iputils-ping,libcap2-bin
say "building bookworm minbase + $packages from $mirror"
start=$SECONDS
# Bookworm's release day (2023-06-10 UTC): the date of everything the build wrote.
build_date=1686355200
touch "$work/build-started"
# SOURCE_DATE_EPOCH makes mmdebstrap's own output reproducible; stdin from /dev/null
# because mmdebstrap reads sources.list lines from a non-terminal stdin. The .debs are
# synced in from and out to $debs (mmdebstrap(1)'s recipe for a package cache), then
# removed from the image. The merged-usr hook makes /bin, /lib... symlinks into /usr as
# debootstrap (and Docker's debian images) do, instead of installing usrmerge, which
# pulls in all of perl. Documentation, manuals and translations are left out (dpkg's
# path-exclude, as Debian's minimal cloud and container images do), copyrights kept.
merged_usr=/usr/share/mmdebstrap/hooks/merged-usr
[[ -d $merged_usr ]] || die "$merged_usr is missing (mmdebstrap >= 1.0 ships it)"
SOURCE_DATE_EPOCH=$build_date mmdebstrap --variant=minbase --mode=root --include="$packages" \
    --hook-dir="$merged_usr" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --skip=essential/unlink \
    --setup-hook="mkdir -p \"\$1\"/var/cache/apt/archives/" \
    --setup-hook="sync-in '$debs' /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives '$debs'" \
    --customize-hook="rm -f \"\$1\"/var/cache/apt/archives/*.deb" \
    --format=directory bookworm "$rootfs" "$mirror" </dev/null >&2
# Keep only the versions this build used: the cache does not grow with every update.
used=$(dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f '${Package}_${Version}_${Architecture}.deb\n' |
    sed 's/:/%3a/')
for deb in "$debs"/*.deb; do
    [[ -e $deb ]] || continue
    grep -qxF "$(basename "$deb")" <<<"$used" || rm -f "$deb"
done

# What the tests expect of the image: fail here, not in a test.
[[ -x $rootfs/usr/bin/python3 ]] || die "usr/bin/python3 is missing"
[[ $(readlink "$rootfs/bin") == usr/bin ]] || die "/bin is not a symlink to usr/bin (merged /usr)"
chroot "$rootfs" /usr/bin/python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' >&2 ||
    die "python3 in the image is not 3.11"
for t in test_os test_posix test_subprocess test_pty test_signal; do
    [[ -f $rootfs/usr/lib/python3.11/test/$t.py ]] || die "usr/lib/python3.11/test/$t.py is missing (libpython3.11-testsuite)"
done
chroot "$rootfs" /usr/bin/python3 -m test --list-tests >/dev/null 2>&1 ||
    die "python3 -m test --list-tests fails in the image"
chroot "$rootfs" /usr/bin/python3 -c 'import ensurepip, venv' || die "ensurepip is missing (python3-venv)"
grep -q '^http[[:space:]]*80/tcp' "$rootfs/etc/services" || die "etc/services has no http (netbase)"
[[ -x $rootfs/usr/bin/ping && -x $rootfs/usr/sbin/getcap ]] || die "usr/bin/ping or usr/sbin/getcap is missing"
caps=$(chroot "$rootfs" /usr/sbin/getcap /usr/bin/ping)
[[ $caps == *cap_net_raw* ]] ||
    die "usr/bin/ping carries no cap_net_raw file capability (getcap: '$caps'); iputils-ping's postinst did not setcap"
[[ $(stat -c %a "$rootfs/usr/bin/ping") != 4* ]] || die "usr/bin/ping is setuid: its postinst fell back from the file capability"
if compgen -G "$rootfs/var/cache/apt/archives/*.deb" >/dev/null; then
    die "the image still holds .debs in var/cache/apt/archives"
fi

say "writing $out"
tmp_out=$out.tmp.$$
trap 'rm -rf "$work" "$tmp_out"' EXIT
# What the build wrote gets the fixed date (package files keep theirs); symlinks too (-h).
find "$rootfs" -newer "$work/build-started" -print0 | xargs -0r touch -h -d "@$build_date"
# Deterministic, owners and security.capability kept: pax format (xattrs), sorted names,
# numeric ids, no atime/ctime, fixed pax header names.
tar -C "$rootfs" --sort=name --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --xattrs --xattrs-include=security.capability \
    -cf "$tmp_out" .
# The capability made it into the tar.
check=$work/check
mkdir "$check"
tar -C "$check" --xattrs --xattrs-include=security.capability -xf "$tmp_out" ./usr/bin/ping
[[ $(getcap "$check/usr/bin/ping") == *cap_net_raw* ]] ||
    die "the tar lost usr/bin/ping's security.capability"
mv -f "$tmp_out" "$out"
chmod 0644 "$out"
echo "$stamp" >"$stamp_file"
say "wrote $out ($(($(stat -c %s "$out") / 1024 / 1024)) MiB) in $((SECONDS - start)) s"
