#!/usr/bin/env bash
# The README's first command: build dist/, make the example image from Debian's
# busybox-static package, pack it into ./busybox and run it (a shell, or the command
# given as arguments: scripts/run-example.sh echo hello).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
bash scripts/make-example-image.sh build
dist/binctr-pack build/busybox.tar -o busybox
echo "run-example.sh: packed ./busybox ($(stat -c %s busybox) bytes); starting it" >&2
exec ./busybox "$@"
