#!/usr/bin/env bash
# Builds the stub (static musl) and the packer with that stub embedded, into dist/.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
# One stub per CPU; the packer embeds both and picks one by the image's platform.
# aarch64 is cross-built with rust-lld (.cargo/config.toml): no aarch64 C toolchain.
targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
# The stub is built with the `stub` profile (Cargo.toml): small, hot loops at -O3.
stub_of() { printf '%s/target/%s/stub/binctr-stub' "$root" "$1"; }
max_stub_bytes=$((1024 * 1024))

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# The stub must run on any Linux machine: no dynamic loader, no shared libraries.
check_static() {
    local stub=$1
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
}

installed=$(rustup target list --installed)
for target in "${targets[@]}"; do
    if ! grep -qx "$target" <<<"$installed"; then
        say "adding the rust target $target"
        rustup target add "$target"
    fi
    say "building the stub for $target"
    cargo build --profile stub -p binctr-stub --target "$target"
    stub=$(stub_of "$target")
    [[ -f $stub ]] || die "the stub was not built: $stub is missing"
    check_static "$stub"
done
stub=$(stub_of x86_64-unknown-linux-musl)
stub_aarch64=$(stub_of aarch64-unknown-linux-musl)

say "building the packer with the stub embedded"
BINCTR_STUB=$stub BINCTR_STUB_AARCH64=$stub_aarch64 cargo build --release -p binctr-pack

mkdir -p dist
# Copy to a temp name and rename: a running test never sees a half-written binary.
for pair in "$stub:binctr-stub" "$stub_aarch64:binctr-stub-aarch64" \
    "$root/target/release/binctr-pack:binctr-pack"; do
    src=${pair%%:*}
    name=${pair##*:}
    [[ -f $src ]] || die "$src was not built"
    tmp="dist/.$name.tmp.$$"
    cp "$src" "$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "dist/$name"
done

too_large=()
for name in binctr-stub binctr-stub-aarch64 binctr-pack; do
    bytes=$(stat -c %s "dist/$name")
    printf '%-28s %10d bytes (%d KiB)\n' "dist/$name" "$bytes" $((bytes / 1024))
    if [[ $name == binctr-stub* ]] && ((bytes > max_stub_bytes)); then
        too_large+=("$name ($bytes bytes)")
    fi
done
# Every packed file carries its stub: 1 MiB is the budget, on both CPUs.
if ((${#too_large[@]})); then
    die "over the 1 MiB stub budget ($max_stub_bytes bytes): ${too_large[*]}"
fi
