#!/usr/bin/env bash
# Builds the image fixtures of tests/tests/formats.rs into OUTDIR (default build/): ONE real
# two-layer image, made with Debian's umoci and skopeo (no daemon), exported in every form
# binctr-pack reads, plus damaged copies for the error tests.
#
#   img-oci/            OCI image layout directory (tags "test" and "other")
#   img-oci.tar         the same image as an OCI archive (skopeo oci-archive:)
#   img-oci-zstd/       OCI layout with zstd-compressed layers
#   img-docker.tar      docker-archive (what docker save / podman save write)
#   img-flat.tar        the flattened root filesystem (umoci unpack, then tar)
#   bad-corrupt-blob/   a layer blob with one byte changed
#   bad-missing-blob/   a layer blob removed
#   bad-media-type/     a layer with an unknown media type
#   bad-two-images/     two different images (tags "test" and "other"), no default
#
# The base layer is build/busybox.tar (scripts/make-example-image.sh) plus a few files; the
# upper layer deletes etc/deleted-file (.wh.), replaces opaque/ with an opaque whiteout
# (.wh..wh..opq), adds a hard link within itself (data/new-a, data/new-b) and one to a file
# of the base layer (data/link-to-base -> data/base-file).
#
# Idempotent: nothing is rebuilt while this script and busybox.tar are unchanged. Run as root
# it installs umoci, skopeo and zstd when they are missing.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
outdir=${1:-build}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

say() { printf 'make-test-images.sh: %s\n' "$*" >&2; }
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

outputs=(img-oci img-oci.tar img-oci-zstd img-docker.tar img-flat.tar
    bad-corrupt-blob bad-missing-blob bad-media-type bad-two-images)
stamp_file=$outdir/.test-images.stamp
stamp=$(cat "$0" "$busybox" | sha256sum | cut -d' ' -f1)
up_to_date=1
for name in "${outputs[@]}"; do
    [[ -e $outdir/$name ]] || up_to_date=0
done
if ((up_to_date)) && [[ $(cat "$stamp_file" 2>/dev/null) == "$stamp" ]]; then
    say "up to date in $outdir"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-test-images.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
umask 022
created=2024-01-02T03:04:05Z
# GNU tar, reproducible: sorted names, numeric root ownership, fixed mtimes.
mktar() { tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --format=gnu "$@"; }

# --- the layers ----------------------------------------------------------------------
base=$work/base
mkdir "$base"
tar -xf "$busybox" -C "$base"
mkdir -p "$base"/{opaque/sub,data,work}
echo "deleted by the upper layer" >"$base/etc/deleted-file"
echo "kept" >"$base/etc/kept-file"
echo "old 1" >"$base/opaque/old1"
echo "old 2" >"$base/opaque/sub/old2"
echo "base file" >"$base/data/base-file"
mktar -C "$base" -cf "$work/base.tar" .

upper=$work/upper
mkdir -p "$upper"/{etc,opaque,data}
: >"$upper/etc/.wh.deleted-file"
: >"$upper/opaque/.wh..wh..opq"
echo "new in opaque" >"$upper/opaque/new"
echo "new a" >"$upper/data/new-a"
ln "$upper/data/new-a" "$upper/data/new-b"
# data/link-to-base becomes a link to the base layer's file: archive a pair of links, then
# delete the pair's first member, leaving the link entry pointing below this layer.
cp "$base/data/base-file" "$upper/data/base-file"
ln "$upper/data/base-file" "$upper/data/link-to-base"
chmod 0700 "$upper/opaque"
mktar -C "$upper" -cf "$work/upper.tar" ./etc ./opaque ./data
tar --delete -f "$work/upper.tar" ./data/base-file

# --- the image (OCI layout, made by umoci) -------------------------------------------
layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:test"
umoci raw add-layer --image "$layout:test" --history.created "$created" "$work/base.tar"
umoci raw add-layer --image "$layout:test" --history.created "$created" "$work/upper.tar"
umoci config --image "$layout:test" --created "$created" --history.created "$created" \
    --author binctr-tests \
    --config.entrypoint /bin/echo --config.entrypoint entry \
    --config.cmd default --config.cmd cmd \
    --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin --config.env IMAGE_A=from-image \
    --config.env IMAGE_B=also-from-image \
    --config.workingdir /work \
    --config.exposedports 8080/tcp \
    --config.volume /data \
    --config.label org.example.test=formats \
    --config.stopsignal SIGQUIT
# A second, different image in the same layout.
umoci config --image "$layout:test" --tag other --created "$created" --history.created "$created" \
    --config.cmd other-image
umoci gc --layout "$layout"

stage=$work/out
mkdir "$stage"
skopeo copy -q "oci:$layout:test" "oci:$stage/img-oci:test"
skopeo copy -q "oci:$layout:test" "oci-archive:$stage/img-oci.tar:test"
skopeo copy -q --dest-compress-format zstd "oci:$layout:test" "oci:$stage/img-oci-zstd:test"
skopeo copy -q "oci:$layout:test" "docker-archive:$stage/img-docker.tar:binctr/test:latest"

bundle=$work/bundle
umoci unpack --image "$layout:test" "$bundle" >/dev/null
mktar -C "$bundle/rootfs" -cf "$stage/img-flat.tar" .

# --- damaged copies ------------------------------------------------------------------
manifest_of() { # layout tag -> the manifest blob path
    local digest
    digest=$(grep -o '"digest":"sha256:[0-9a-f]*"' "$1/index.json" | head -n1 | grep -o '[0-9a-f]\{64\}')
    echo "$1/blobs/sha256/$digest"
}
largest_layer() { # layout -> path of the largest blob (the base layer)
    ls -S "$1"/blobs/sha256/* | head -n1
}

cp -a "$stage/img-oci" "$stage/bad-corrupt-blob"
blob=$(largest_layer "$stage/bad-corrupt-blob")
chmod u+w "$blob"
size=$(stat -c %s "$blob")
printf '\x42' | dd of="$blob" bs=1 seek=$((size / 2)) conv=notrunc status=none

cp -a "$stage/img-oci" "$stage/bad-missing-blob"
rm -f "$(largest_layer "$stage/bad-missing-blob")"

cp -a "$stage/img-oci" "$stage/bad-media-type"
old=$(manifest_of "$stage/bad-media-type")
new_manifest=$work/manifest.json
sed 's#application/vnd.oci.image.layer.v1.tar+gzip#application/vnd.example.layer.v1.tar+lzma#' "$old" >"$new_manifest"
cmp -s "$old" "$new_manifest" && die "the manifest has no gzip layer to rename"
new_digest=$(sha256sum "$new_manifest" | cut -d' ' -f1)
new_size=$(stat -c %s "$new_manifest")
old_digest=$(basename "$old")
old_size=$(stat -c %s "$old")
mv "$new_manifest" "$stage/bad-media-type/blobs/sha256/$new_digest"
rm -f "$old"
sed -i "s/$old_digest/$new_digest/; s/\"size\":$old_size,/\"size\":$new_size,/" "$stage/bad-media-type/index.json"

skopeo copy -q "oci:$layout:test" "oci:$stage/bad-two-images:test"
skopeo copy -q "oci:$layout:other" "oci:$stage/bad-two-images:other"

# --- into place ----------------------------------------------------------------------
for name in "${outputs[@]}"; do
    rm -rf "${outdir:?}/$name"
    mv "$stage/$name" "$outdir/$name"
done
chmod -R a+rX "${outputs[@]/#/$outdir/}"
echo "$stamp" >"$stamp_file"
say "wrote ${outputs[*]} into $outdir"
