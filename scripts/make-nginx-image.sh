#!/usr/bin/env bash
# Builds OUTDIR/nginx.tar (default build/nginx.tar): a Debian bookworm root filesystem with
# nginx, made from Debian's packages with mmdebstrap, for the end-to-end tests of
# tests/tests/users.rs (issue 5: an image with many owners, nginx run by an ordinary user).
#
# The image is Debian's nginx as installed, plus:
#   /etc/nginx/sites-available/default   (enabled through Debian's sites-enabled symlink)
#                                         listens on 127.0.0.1:18080 only
#   /var/www/html/index.html              the page, holding the marker line below
#   /var/www/html/owned-by-www-data       a file owned by www-data (33:33), mode 0640
# nginx.conf is Debian's: `user www-data;` (master root, workers www-data), pid /run/nginx.pid.
#
# The tar keeps every owner (www-data's files matter: no --owner=0), numeric ids, sorted
# names and clamped mtimes: the same packages give byte-identical output.
# Idempotent: nothing is rebuilt while this script is unchanged and the tar exists (remove
# OUTDIR/nginx.tar to rebuild with newer packages). Must run as root (mmdebstrap's root
# mode keeps the owners); installs mmdebstrap when it is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
outdir=${1:-build}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
out=$outdir/nginx.tar
stamp_file=$outdir/.nginx-image.stamp

# Keep in step with tests/tests/users.rs.
port=18080
marker="binctr-nginx-test-page-5f3c1e"

say() { printf 'make-nginx-image.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

stamp=$(sha256sum "$0" | cut -d' ' -f1)
if [[ -s $out && $(cat "$stamp_file" 2>/dev/null) == "$stamp" ]]; then
    say "up to date: $out ($(($(stat -c %s "$out") / 1024 / 1024)) MiB); remove it to rebuild"
    exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root: the image's files belong to several users"
missing=()
for pair in mmdebstrap:mmdebstrap tar:tar sha256sum:coreutils; do
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

work=$(mktemp -d "${TMPDIR:-/tmp}/binctr-nginx.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
umask 022
rootfs=$work/rootfs

# The files the tests rely on, written into the rootfs before it is packed.
cat >"$work/site" <<SITE
# binctr test site (scripts/make-nginx-image.sh): loopback only, a fixed port.
server {
	listen 127.0.0.1:$port default_server;
	root /var/www/html;
	index index.html;
	server_name _;
	location / {
		try_files \$uri \$uri/ =404;
	}
}
SITE
cat >"$work/index.html" <<PAGE
<!DOCTYPE html>
<html><head><title>binctr nginx</title></head>
<body>
<p>$marker</p>
</body></html>
PAGE

say "building bookworm minbase + nginx from $mirror"
start=$SECONDS
# SOURCE_DATE_EPOCH makes mmdebstrap's own output reproducible; stdin from /dev/null
# because mmdebstrap reads sources.list lines from a non-terminal stdin.
SOURCE_DATE_EPOCH=0 mmdebstrap --variant=minbase --mode=root --include=nginx \
    --customize-hook="install -m 0644 -o 0 -g 0 '$work/site' \"\$1/etc/nginx/sites-available/default\"" \
    --customize-hook="install -m 0644 -o 0 -g 0 '$work/index.html' \"\$1/var/www/html/index.html\"" \
    --customize-hook="rm -f \"\$1\"/var/www/html/index.nginx-debian.html" \
    --customize-hook="printf 'owned by www-data\n' >\"\$1/var/www/html/owned-by-www-data\"" \
    --customize-hook="chown 33:33 \"\$1/var/www/html/owned-by-www-data\"; chmod 0640 \"\$1/var/www/html/owned-by-www-data\"" \
    --format=directory bookworm "$rootfs" "$mirror" </dev/null >&2

# What the tests expect of the image: fail here, not in a test.
grep -qx 'user www-data;' "$rootfs/etc/nginx/nginx.conf" || die "nginx.conf does not say 'user www-data;'"
grep -q '^pid /run/nginx.pid;' "$rootfs/etc/nginx/nginx.conf" || die "nginx.conf does not keep its pid file in /run"
[[ $(readlink "$rootfs/etc/nginx/sites-enabled/default") == /etc/nginx/sites-available/default ]] ||
    die "etc/nginx/sites-enabled/default is not Debian's symlink to sites-available/default"
grep -q "^www-data:x:33:33:" "$rootfs/etc/passwd" || die "www-data is not uid 33 in the image"
[[ -x $rootfs/usr/sbin/nginx ]] || die "usr/sbin/nginx is missing"
chroot "$rootfs" /usr/sbin/nginx -t >&2 || die "nginx -t rejects the configuration"
[[ $(stat -c %u:%g "$rootfs/var/www/html/owned-by-www-data") == 33:33 ]] || die "the www-data file lost its owner"

say "writing $out"
tmp_out=$out.tmp.$$
trap 'rm -rf "$work" "$tmp_out"' EXIT
# Deterministic, owners kept: sorted names, numeric ids, mtimes clamped to the epoch.
tar -C "$rootfs" --sort=name --numeric-owner --mtime=@0 --clamp-mtime --format=gnu \
    -cf "$tmp_out" .
mv -f "$tmp_out" "$out"
chmod 0644 "$out"
echo "$stamp" >"$stamp_file"
say "wrote $out ($(($(stat -c %s "$out") / 1024 / 1024)) MiB) in $((SECONDS - start)) s"
