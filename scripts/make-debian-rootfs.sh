#!/usr/bin/env bash
# Builds a ~170 MB Debian bookworm rootfs tar with mmdebstrap, for the benchmark.
# Usage: make-debian-rootfs.sh [OUT.tar]   (default build/debian-rootfs.tar)
# The result is cached: when OUT exists it is kept as is (remove it to rebuild).
set -euo pipefail

cd "$(dirname "$0")/.."
out=${1:-build/debian-rootfs.tar}
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

say() { printf 'make-debian-rootfs.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [[ -s $out ]]; then
    say "using the cached $out ($(($(stat -c %s "$out") / 1024 / 1024)) MiB); remove it to rebuild"
    exit 0
fi
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: apt-get install mmdebstrap"

# The Debian mirror apt uses on this machine (deb822 .sources or one-line sources.list),
# else deb.debian.org.
mirror=$(
    {
        grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
        grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
            sed 's/\[[^]]*\]//' | awk '{print $2}'
    } | grep -E '/debian/?$' | head -n1 || true
)
mirror=${mirror:-http://deb.debian.org/debian}

if [[ $(id -u) == 0 ]]; then mode=root; else mode=unshare; fi
# minbase plus ca-certificates is about 170 MB: the size the benchmark targets.
include=${BINCTR_DEBIAN_INCLUDE:-ca-certificates}
say "building bookworm minbase (+$include) from $mirror (mode $mode) into $out"
tmp_out=$out.tmp.tar
rm -f "$tmp_out"
trap 'rm -f "$tmp_out"' EXIT
# SOURCE_DATE_EPOCH makes the tar reproducible; stdin from /dev/null because mmdebstrap
# reads sources.list lines from a non-terminal stdin.
SOURCE_DATE_EPOCH=0 mmdebstrap --variant=minbase --mode="$mode" --include="$include" \
    --format=tar bookworm "$tmp_out" "$mirror" </dev/null
mv -f "$tmp_out" "$out"
trap - EXIT
say "wrote $out ($(($(stat -c %s "$out") / 1024 / 1024)) MiB)"
