#!/usr/bin/env bash
# Builds OUTDIR/mpi.tar (default build/mpi.tar): a Debian bookworm root filesystem
# (mmdebstrap --variant=minbase) with Open MPI (openmpi-bin, and libpmix2 so that a rank
# started by `srun --mpi=pmix` talks PMIx to slurmstepd), plus /ring: tests/mpi/ring.c
# compiled on the host with mpicc, for tests/tests/slurm.rs (issue 14: MPI ranks under
# Slurm, across nodes and over shared memory on one node).
#
# What the tests rely on, checked here before the tar is written:
#   /ring is an MPI program whose shared libraries all resolve in the image;
#   the image's Open MPI is the host's (the one mpicc compiled /ring against);
#   its PMIx client (the ext3x component) and libpmix are there; /bin/sh exists.
#
# The tar keeps every owner, numeric ids, sorted names, no atime/ctime records; files keep
# their packages' mtimes and what the build itself wrote gets a fixed date, so the same
# packages give byte-identical output. Idempotent: nothing is rebuilt while this script and
# tests/mpi/ring.c are unchanged and the tar exists (remove OUTDIR/mpi.tar to rebuild with
# newer packages). The downloaded .debs are kept in OUTDIR/.mpi-debs, so a rebuild
# downloads only what changed. Must run as root (mmdebstrap's root mode keeps owners);
# installs mmdebstrap and the host's Open MPI (libopenmpi-dev: mpicc) when missing.
set -euo pipefail

cd "$(dirname "$0")/.."
src=$PWD/tests/mpi/ring.c
outdir=${1:-build}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
out=$outdir/mpi.tar
stamp_file=$outdir/.mpi-image.stamp
debs=$outdir/.mpi-debs

say() { printf 'make-mpi-image.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[[ -f $src ]] || die "$src is missing"
stamp=$(cat "$0" "$src" | sha256sum | cut -d' ' -f1)
if [[ -s $out && $(cat "$stamp_file" 2>/dev/null) == "$stamp" ]]; then
    say "up to date: $out ($(($(stat -c %s "$out") / 1024 / 1024)) MiB); remove it to rebuild"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root: the image's files belong to several users"
missing=()
for pair in mmdebstrap:mmdebstrap tar:tar sha256sum:coreutils mpicc:libopenmpi-dev; do
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
# mpicc must be Open MPI's (the mpi alternative may point at MPICH's).
mpicc --showme:version 2>&1 | grep -q 'Open MPI' ||
    die "mpicc is not Open MPI's ($(mpicc --version 2>&1 | head -n1)); set the mpi alternative to Open MPI"
host_ompi=$(dpkg-query -W -f '${Version}' libopenmpi3 2>/dev/null) || die "libopenmpi3 is not installed on the host"

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

work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-mpi.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
umask 022
rootfs=$work/rootfs
mkdir -p "$debs"

say "compiling tests/mpi/ring.c with $(command -v mpicc) (Open MPI $host_ompi)"
mpicc -O2 -Wall -Wextra -Werror -o "$work/ring" "$src"

packages=openmpi-bin,libpmix2
say "building bookworm minbase + $packages from $mirror"
start=$SECONDS
# Bookworm's release day (2023-06-10 UTC): the date of everything the build wrote.
build_date=1686355200
touch "$work/build-started"
# As scripts/make-python-image.sh: stdin from /dev/null (mmdebstrap reads sources.list
# lines from a non-terminal stdin), a package cache synced in and out, merged /usr by
# mmdebstrap's hook, no documentation, manuals or translations (copyrights kept).
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
    --customize-hook="install -m 0755 -o 0 -g 0 '$work/ring' \"\$1/ring\"" \
    --format=directory bookworm "$rootfs" "$mirror" </dev/null >&2
# Keep only the versions this build used: the cache does not grow with every update.
used=$(dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f '${Package}_${Version}_${Architecture}.deb\n' |
    sed 's/:/%3a/')
for deb in "$debs"/*.deb; do
    [[ -e $deb ]] || continue
    grep -qxF "$(basename "$deb")" <<<"$used" || rm -f "$deb"
done

# What the tests expect of the image: fail here, not in a test.
[[ -x $rootfs/ring ]] || die "/ring is missing"
[[ -x $rootfs/bin/sh ]] || die "/bin/sh is missing"
image_ompi=$(dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f '${Version}' libopenmpi3) ||
    die "libopenmpi3 is not in the image"
[[ ${image_ompi%%-*} == "${host_ompi%%-*}" ]] ||
    die "the image has Open MPI $image_ompi but /ring was compiled against the host's $host_ompi"
unresolved=$(chroot "$rootfs" /usr/bin/ldd /ring | grep 'not found' || true)
[[ -z $unresolved ]] || die "/ring's libraries do not all resolve in the image: $unresolved"
compgen -G "$rootfs/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3/mca_pmix_ext3x.so" >/dev/null ||
    die "Open MPI's PMIx component (mca_pmix_ext3x.so) is missing"
compgen -G "$rootfs/usr/lib/x86_64-linux-gnu/libpmix.so.2*" >/dev/null || die "libpmix.so.2 is missing (libpmix2)"
compgen -G "$rootfs/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3/mca_btl_vader.so" >/dev/null ||
    die "Open MPI's shared-memory transport (mca_btl_vader.so) is missing"
if compgen -G "$rootfs/var/cache/apt/archives/*.deb" >/dev/null; then
    die "the image still holds .debs in var/cache/apt/archives"
fi

say "writing $out"
tmp_out=$out.tmp.$$
trap 'rm -rf "$work" "$tmp_out"' EXIT
# What the build wrote gets the fixed date (package files keep theirs); symlinks too (-h).
find "$rootfs" -newer "$work/build-started" -print0 | xargs -0r touch -h -d "@$build_date"
# Deterministic, owners kept: pax format, sorted names, numeric ids, no atime/ctime, fixed
# pax header names.
tar -C "$rootfs" --sort=name --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -cf "$tmp_out" .
mv -f "$tmp_out" "$out"
chmod 0644 "$out"
echo "$stamp" >"$stamp_file"
say "wrote $out ($(($(stat -c %s "$out") / 1024 / 1024)) MiB) in $((SECONDS - start)) s"
