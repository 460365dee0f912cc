#!/usr/bin/env bash
# Builds the stub (static musl) and the packer with that stub embedded, into dist/.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
target=x86_64-unknown-linux-musl
# The stub is built with the `stub` profile (Cargo.toml): small, hot loops at -O3.
stub=$root/target/$target/stub/binctr-stub
max_stub_bytes=$((1024 * 1024))

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if ! rustup target list --installed | grep -qx "$target"; then
    say "adding the rust target $target"
    rustup target add "$target"
fi

say "building the stub for $target"
cargo build --profile stub -p binctr-stub --target "$target"
[[ -f $stub ]] || die "the stub was not built: $stub is missing"

# The stub must run on any Linux machine: no dynamic loader, no shared libraries.
if command -v readelf >/dev/null; then
    if readelf -lW "$stub" | grep -q 'INTERP'; then
        die "$stub has a PT_INTERP program header (dynamically linked); it must be static"
    fi
    if readelf -dW "$stub" 2>/dev/null | grep -q '(NEEDED)'; then
        die "$stub needs shared libraries; it must be static"
    fi
elif command -v file >/dev/null; then
    if file -L "$stub" | grep -qE 'dynamically linked|interpreter'; then
        die "$stub is dynamically linked ($(file -bL "$stub")); it must be static"
    fi
else
    die "neither readelf (binutils) nor file is installed: cannot check that the stub is static"
fi

say "building the packer with the stub embedded"
BINCTR_STUB=$stub cargo build --release -p binctr-pack

mkdir -p dist
# Copy to a temp name and rename: a running test never sees a half-written binary.
for pair in "$stub:binctr-stub" "$root/target/release/binctr-pack:binctr-pack"; do
    src=${pair%%:*}
    name=${pair##*:}
    [[ -f $src ]] || die "$src was not built"
    tmp="dist/.$name.tmp.$$"
    cp "$src" "$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "dist/$name"
done

stub_bytes=$(stat -c %s dist/binctr-stub)
pack_bytes=$(stat -c %s dist/binctr-pack)
printf '%-24s %10d bytes (%d KiB)\n' dist/binctr-stub "$stub_bytes" $((stub_bytes / 1024))
printf '%-24s %10d bytes (%d KiB)\n' dist/binctr-pack "$pack_bytes" $((pack_bytes / 1024))
if ((stub_bytes > max_stub_bytes)); then
    say "WARNING: the stub is $stub_bytes bytes, over the 1 MiB target ($max_stub_bytes bytes)"
fi
