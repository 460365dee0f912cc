#!/usr/bin/env bash
# Builds the `umoci insert` fixture of issue 12 into OUTDIR (default build/): the busybox
# image (build/busybox.tar as a first layer) with four more layers written by Debian's
# umoci 0.4.7 `umoci insert`, whose layer tars end right after the last file's data (no
# padding, no end-of-archive blocks), as docker, podman and skopeo accept them:
#
#   img-umoci-insert.tar         OCI archive (skopeo copy oci-archive:)
#   img-umoci-insert-docker.tar  the same image as a docker-archive (skopeo docker-archive:)
#
# The layers, in order (tests/tests/podman_compare.rs checks each inside the container):
#   1. build/busybox.tar, plus etc/deleted-file, opaque/{old1,sub/old2}, data/base-file
#   2. insert a file:              etc/inserted-file ("inserted file")
#   3. insert a directory:         srv/inserted-dir/{a,sub/b} (a: mode 0640, sub: 0750)
#   4. insert --opaque:            opaque/ holds only new-only (old1 and sub/ are hidden)
#   5. insert --whiteout:          etc/deleted-file is gone
#
# Idempotent: nothing is rebuilt while this script and busybox.tar are unchanged. Run as
# root it installs umoci and skopeo when they are missing.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
outdir=${1:-build}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

say() { printf 'make-umoci-insert-image.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

missing=()
for pair in umoci:umoci skopeo:skopeo tar:tar sha256sum:coreutils; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "missing packages: ${missing[*]} (as root: apt-get install ${missing[*]})"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2 || {
        apt-get update -q </dev/null >&2
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2
    }
fi

busybox=$outdir/busybox.tar
if [[ ! -f $busybox ]]; then
    say "making $busybox first"
    bash "$root/scripts/make-example-image.sh" "$outdir"
fi

outputs=(img-umoci-insert.tar img-umoci-insert-docker.tar)
stamp_file=$outdir/.umoci-insert-image.stamp
stamp=$(cat "$0" "$busybox" | sha256sum | cut -d' ' -f1)
up_to_date=1
for name in "${outputs[@]}"; do
    [[ -e $outdir/$name ]] || up_to_date=0
done
if ((up_to_date)) && [[ $(cat "$stamp_file" 2>/dev/null) == "$stamp" ]]; then
    say "up to date in $outdir"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-umoci-insert.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
umask 022
created=2024-01-02T03:04:05Z
mktar() { tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --format=gnu "$@"; }
# What `umoci insert` writes into its layer takes the mtimes of the host files: fix them.
settime() { find "$@" -exec touch -h -d @1700000000 {} +; }

# --- the base layer: busybox and a few files the inserts replace or delete -------------
base=$work/base
mkdir "$base"
tar -xf "$busybox" -C "$base"
mkdir -p "$base"/{opaque/sub,data}
echo "deleted by a whiteout layer" >"$base/etc/deleted-file"
echo "old 1" >"$base/opaque/old1"
echo "old 2" >"$base/opaque/sub/old2"
echo "base file" >"$base/data/base-file"
mktar -C "$base" -cf "$work/base.tar" .

# --- what the inserts add ----------------------------------------------------------------
src=$work/src
mkdir -p "$src/dir/sub" "$src/opaque-dir"
echo "inserted file" >"$src/inserted-file"
echo "a" >"$src/dir/a"
echo "b" >"$src/dir/sub/b"
chmod 0640 "$src/dir/a"
chmod 0750 "$src/dir/sub"
echo "new only" >"$src/opaque-dir/new-only"
settime "$src"

# --- the image ---------------------------------------------------------------------------
layout=$work/layout
image=$layout:test
history=(--history.created "$created" --history.author binctr-tests)
umoci init --layout "$layout"
umoci new --image "$image"
umoci raw add-layer --image "$image" "${history[@]}" "$work/base.tar"
umoci insert --image "$image" "${history[@]}" "$src/inserted-file" /etc/inserted-file
umoci insert --image "$image" "${history[@]}" "$src/dir" /srv/inserted-dir
umoci insert --image "$image" "${history[@]}" --opaque "$src/opaque-dir" /opaque
umoci insert --image "$image" "${history[@]}" --whiteout /etc/deleted-file
umoci config --image "$image" --created "$created" --history.created "$created" \
    --author binctr-tests \
    --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd /bin/sh
umoci gc --layout "$layout"

stage=$work/out
mkdir "$stage"
skopeo copy -q "oci:$image" "oci-archive:$stage/img-umoci-insert.tar:test"
skopeo copy -q "oci:$image" "docker-archive:$stage/img-umoci-insert-docker.tar:binctr/umoci-insert:latest"

# --- into place ----------------------------------------------------------------------
for name in "${outputs[@]}"; do
    rm -rf "${outdir:?}/$name"
    mv "$stage/$name" "$outdir/$name"
done
chmod a+r "${outputs[@]/#/$outdir/}"
echo "$stamp" >"$stamp_file"
say "wrote ${outputs[*]} into $outdir"
