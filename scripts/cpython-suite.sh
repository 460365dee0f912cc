#!/usr/bin/env bash
# CPython's regression suite inside the packed Debian image (issue 11: POSIX behaves as on
# the host), the slow tier. The test suite already runs the OS modules
# (tests/tests/posix.rs, cpython_regression_suite_passes_under_subordinate_ids, about 10
# minutes); this runs the same test with more modules, or with the ones you name:
#
#   scripts/cpython-suite.sh                  the test's modules plus the slow ones below
#   scripts/cpython-suite.sh test_os test_io  just these
#
# Each module runs as `python3 -m test -j1 MODULE` as root inside the container, with the
# default id mapping (subordinate ids); the log shows pass/fail per module, and the run
# fails on any failure outside the test's allow-list (failures every user namespace
# causes, each with its reason, in tests/tests/posix.rs).
#
# Needs dist/ (scripts/build.sh) and build/python.tar (scripts/make-python-image.sh, made
# here when running as root). As root, the container runs as the test user
# (scripts/ensure-test-user.sh), as in scripts/test.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

say() { printf 'cpython-suite.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Slow or far from the OS, so not in the default test run.
slow=(
    test_asyncio                     # ~2 min: event loops, subprocesses, unix sockets
    test_multiprocessing_fork        # ~1.5 min each: pipes, semaphores in /dev/shm, fork
    test_multiprocessing_forkserver
    test_multiprocessing_spawn
    test_largefile                   # 2.5 GB files, copied: 5 GB of disk for a while
    test_zipfile test_compileall    # ~20 s each, files more than the OS
    test_sys test_site test_cmd_line test_cmd_line_script test_platform test_uuid
    test_crypt test_spwd test_getpath test_sched test_atexit test_thread test_ioctl
)

[[ -x dist/binctr-pack && -x dist/binctr-stub ]] || die "dist/ is not built: run scripts/build.sh"
if [[ ! -s build/python.tar ]]; then
    [[ $(id -u) == 0 ]] || die "build/python.tar is missing: run (as root) bash scripts/make-python-image.sh build"
    bash scripts/make-python-image.sh build </dev/null
fi

export BINCTR_DIST=$root/dist BINCTR_FIXTURES=$root/build
export BINCTR_STUB=$root/target/x86_64-unknown-linux-musl/stub/binctr-stub
if [[ $(id -u) == 0 ]]; then
    BINCTR_TEST_USER=$(bash scripts/ensure-test-user.sh)
    export BINCTR_TEST_USER
else
    unset BINCTR_TEST_USER
fi
if (($#)); then
    export BINCTR_CPYTHON_MODULES="$*"
    unset BINCTR_CPYTHON_EXTRA_MODULES
else
    unset BINCTR_CPYTHON_MODULES
    export BINCTR_CPYTHON_EXTRA_MODULES="${slow[*]}"
fi
modules=${BINCTR_CPYTHON_MODULES:-"the default modules + ${slow[*]}"}
say "running the CPython suite in the packed image: $modules"
start=$SECONDS
status=0
cargo test -p binctr-tests --test posix --color=never -- --exact \
    cpython_regression_suite_passes_under_subordinate_ids --nocapture </dev/null || status=$?
say "done in $((SECONDS - start)) s (exit status $status)"
exit "$status"
