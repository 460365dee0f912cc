#!/usr/bin/env bash
# Fuzzes what the stub reads from a packed file (footer, config JSON) with cargo fuzz,
# each target for a bounded time.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default $FUZZ_SECONDS, else 60)
# First replays fuzz/regressions/<target>/ (inputs that once crashed), then fuzzes from
# fuzz/seeds/<target>/ into fuzz/corpus/<target>/. Exits non-zero when any target
# crashes; the crashing input is in fuzz/artifacts/<target>/: keep it as a regression by
# copying it to fuzz/regressions/<target>/ once fixed.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:-${FUZZ_SECONDS:-60}}
targets=(footer config)

say() { printf 'fuzz.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $seconds =~ ^[0-9]+$ ]] && ((seconds > 0)) || die "SECONDS must be a positive number, not '$seconds'"

if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain (cargo fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

failed=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/regressions/$target" "fuzz/seeds/$target"
    say "$target: building"
    (cd fuzz && cargo +nightly fuzz build "$target") </dev/null || die "cannot build the fuzz target $target"
    if compgen -G "fuzz/regressions/$target/*" >/dev/null; then
        say "$target: replaying fuzz/regressions/$target"
        if ! (cd fuzz && cargo +nightly fuzz run "$target" "regressions/$target" -- -runs=0) </dev/null; then
            failed+=("$target (a regression input fails again)")
            continue
        fi
    fi
    say "$target: fuzzing for $seconds s"
    log=$(mktemp "${TMPDIR:-/tmp}/binctr-fuzz-$target.XXXXXX")
    if (cd fuzz && cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) \
        </dev/null 2>&1 | tee "$log" | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY|Test unit written|thread .* panicked)'; then
        :
    fi
    if grep -qE 'Test unit written to|SUMMARY: (libFuzzer|AddressSanitizer)|panicked at' "$log"; then
        failed+=("$target: $(grep -oE 'Test unit written to [^ ]+' "$log" | head -n1)")
    elif ! grep -q 'stat::number_of_executed_units' "$log"; then
        failed+=("$target (did not run to its end: see $log)")
        continue
    fi
    rm -f "$log"
done

if ((${#failed[@]})); then
    say "FAILED:"
    printf '  %s\n' "${failed[@]}" >&2
    say "reproduce with: (cd fuzz && cargo +nightly fuzz run TARGET artifacts/TARGET/crash-...)"
    exit 1
fi
say "all targets ran ${seconds} s without a crash"
