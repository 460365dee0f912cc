#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, builds dist/, makes the
# example image, and runs format, lint, unit and end-to-end tests.
# As root (CI), the packed binaries are run by the dedicated non-root user binctr-test.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
test_user=binctr-test

say() { printf '\n== test.sh: %s\n' "$*" >&2; }
die() { printf 'test.sh: error: %s\n' "$*" >&2; exit 1; }

is_root() { [[ $(id -u) == 0 ]]; }

# --- 1. System packages ------------------------------------------------------------------
# command -> Debian package providing it
declare -A needs=(
    [setpriv]=util-linux     # run as the test user with a clean environment
    [unshare]=util-linux     # user namespace check
    [newuidmap]=uidmap       # full-range mapping (later issues)
    [newgidmap]=uidmap
    [readelf]=binutils       # build.sh: the stub must be static
    [apt-get]=apt            # make-example-image.sh downloads busybox-static
    [dpkg-deb]=dpkg
    [tar]=tar
    [useradd]=passwd
    [cc]=gcc                 # the linker rustc uses
    [mmdebstrap]=mmdebstrap  # make-nginx-image.sh, make-debian-rootfs.sh
    [podman]=podman          # scripts/compare-podman.sh (tests/tests/podman_compare.rs)
    [python3]=python3        # compare-podman.sh reads the two tars
    [qemu-system-aarch64]=qemu-system-arm  # arm64-vm.sh: the aarch64 stub on an arm64 kernel
    [cpio]=cpio              # arm64-vm.sh: the VM's initramfs
)
missing=()
for cmd in "${!needs[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${needs[$cmd]}")
done
# The C library headers and start files rustc links against.
[[ -e /usr/lib/x86_64-linux-gnu/crt1.o || -e /usr/lib/crt1.o ]] || missing+=(libc6-dev)
# GNU time (not the shell keyword): peak RSS of the stub on hostile inputs (hardening.rs).
[[ -x /usr/bin/time ]] || missing+=(time)
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if ! is_root; then
        die "missing packages: ${missing[*]}; install them (as root: apt-get install ${missing[*]}) or run this script as root"
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        say "adding the rust component $component"
        rustup component add "$component"
    fi
done

# --- 2. Build ----------------------------------------------------------------------------
say "building dist/"
bash scripts/build.sh </dev/null || die "scripts/build.sh failed (see above): nothing to test"
# The packer's build script embeds these stubs; clippy and cargo test build the packer too.
export BINCTR_STUB=$root/target/x86_64-unknown-linux-musl/stub/binctr-stub
export BINCTR_STUB_AARCH64=$root/target/aarch64-unknown-linux-musl/stub/binctr-stub

# --- 3. Example image --------------------------------------------------------------------
say "making the example image"
bash scripts/make-example-image.sh build </dev/null || die "the example image could not be made (see above)"
say "making the multi-layer test images (skopeo, umoci)"
bash scripts/make-test-images.sh build </dev/null || die "the test images could not be made (see above)"
say "making the umoci-insert image (issue 12: layer tars without end-of-archive blocks)"
bash scripts/make-umoci-insert-image.sh build </dev/null || die "the umoci-insert image could not be made (see above)"
say "making the nginx image (mmdebstrap, Debian bookworm)"
bash scripts/make-nginx-image.sh build </dev/null || die "the nginx image could not be made (see above)"
say "making the python image (mmdebstrap, Debian bookworm: CPython's regression tests, ping's file capability)"
bash scripts/make-python-image.sh build </dev/null || die "the python image could not be made (see above)"
say "making the arm64 kernel, tools and images (arm64.rs: the aarch64 stub on a booted arm64 kernel)"
bash scripts/arm64-vm.sh build </dev/null || die "the arm64 VM's kernel, tools or images could not be made (see above)"
say "making the Debian rootfs (hostile.rs: SIGKILL mid-extraction, a full cache, seccomp)"
bash scripts/make-debian-rootfs.sh </dev/null || die "the Debian rootfs could not be made (see above)"

# --- 4. Test user ------------------------------------------------------------------------
if is_root; then
    test_user=$(bash scripts/ensure-test-user.sh)
    export BINCTR_TEST_USER=$test_user
    # A second local user: the neighbour (attacker) of the hardening tests.
    BINCTR_NEIGHBOUR_USER=$(bash scripts/ensure-test-user.sh --neighbour)
    export BINCTR_NEIGHBOUR_USER
    run_as_test_user() { setpriv --reuid="$test_user" --regid="$test_user" --init-groups -- "$@"; }
else
    unset BINCTR_TEST_USER BINCTR_NEIGHBOUR_USER
    run_as_test_user() { "$@"; }
fi

# --- 5. Unprivileged user namespaces -----------------------------------------------------
say "checking unprivileged user namespaces"
if ! userns_err=$(cd / && run_as_test_user unshare --user --map-root-user --mount --pid --fork true 2>&1 </dev/null); then
    reason="unshare as $(is_root && echo "$test_user" || id -un) failed: $userns_err"
    max=$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo '?')
    [[ $max == 0 ]] && reason+="; user.max_user_namespaces is 0 (sysctl -w user.max_user_namespaces=15000)"
    clone=$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null || echo '')
    [[ $clone == 0 ]] && reason+="; kernel.unprivileged_userns_clone is 0 (sysctl -w kernel.unprivileged_userns_clone=1)"
    aa=$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns 2>/dev/null || echo '')
    [[ $aa == 1 ]] && reason+="; kernel.apparmor_restrict_unprivileged_userns is 1 (sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)"
    die "unprivileged user namespaces do not work, so no container can run: $reason"
fi
echo "ok: user namespaces (kernel $(uname -r), user.max_user_namespaces=$(cat /proc/sys/user/max_user_namespaces))"

# --- 5b. Slurm and MPI (issue 14: tests/tests/slurm.rs) ----------------------------------
# A three-node Slurm cluster on this machine and an Open MPI image; the cluster is stopped
# after the checks (below). The pmix plugin of srun loads libpmix.so from libpmix-dev.
slurm_pkgs=(slurm-wlm munge openmpi-bin libopenmpi-dev libpmix2 libpmix-bin libpmix-dev)
slurm_missing=()
for pkg in "${slurm_pkgs[@]}"; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || slurm_missing+=("$pkg")
done
if ((${#slurm_missing[@]})); then
    is_root || die "missing packages: ${slurm_missing[*]}; install them (as root: apt-get install ${slurm_missing[*]}) or run this script as root"
    say "installing ${slurm_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${slurm_missing[@]}" </dev/null || {
        apt-get update -q </dev/null
        apt-get install -y -q --no-install-recommends "${slurm_missing[@]}" </dev/null
    }
fi
say "making the MPI image (mmdebstrap, Debian bookworm: Open MPI, PMIx, tests/mpi/ring.c)"
bash scripts/make-mpi-image.sh build </dev/null || die "the MPI image could not be made (see above)"
say "starting the Slurm test cluster (three slurmd on this machine)"
bash scripts/slurm-cluster.sh start </dev/null || die "the Slurm test cluster could not be started (see above)"
# --- end of 5b ---------------------------------------------------------------------------

# --- 6. Checks ---------------------------------------------------------------------------
export BINCTR_DIST=$root/dist
export BINCTR_FIXTURES=$root/build
declare -a results=()
failed=0
check() {
    local name=$1
    shift
    say "$name: $*"
    local start=$SECONDS
    if "$@" </dev/null; then
        results+=("PASS  $name ($((SECONDS - start)) s)")
    else
        results+=("FAIL  $name ($((SECONDS - start)) s): $*")
        failed=1
    fi
}
test_log=$(mktemp "${TMPDIR:-/tmp}/binctr-test-log.XXXXXX")
trap 'rm -f "$test_log"' EXIT
cargo_test_workspace() { cargo test --workspace --no-fail-fast --color=never 2>&1 | tee "$test_log"; }
check fmt cargo fmt --all -- --check
check clippy cargo clippy --workspace --all-targets -- -D warnings
check tests cargo_test_workspace
check fuzz bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
# The packed files keep a user namespace per user in a sleeping holder (issue 13), by
# design; the test user's are ours to stop once the tests are done.
if is_root; then
    pkill -KILL -u "$test_user" -x binctr-userns 2>/dev/null || true
fi
# --- 5b, the end: the Slurm test cluster (started above) stops and leaves nothing -----------
bash scripts/slurm-cluster.sh stop </dev/null || say "warning: scripts/slurm-cluster.sh stop failed (see above)"

say "summary"
printf '  BINCTR_DIST=%s BINCTR_FIXTURES=%s BINCTR_TEST_USER=%s BINCTR_NEIGHBOUR_USER=%s\n' \
    "$BINCTR_DIST" "$BINCTR_FIXTURES" "${BINCTR_TEST_USER:-(unset: running as $(id -un))}" \
    "${BINCTR_NEIGHBOUR_USER:-(unset)}"
printf '  %s\n' "${results[@]}"
if grep -q '^test .* \.\.\. FAILED$' "$test_log"; then
    echo "  failed tests:"
    grep '^test .* \.\.\. FAILED$' "$test_log" | sed 's/^test /    /; s/ \.\.\. FAILED$//'
fi
if grep -q '^error: could not compile' "$test_log"; then
    grep '^error: could not compile' "$test_log" | sort -u | sed 's/^/  /'
fi
if ((failed)); then
    echo "test.sh: FAILED" >&2
    exit 1
fi
echo "test.sh: all checks passed"
