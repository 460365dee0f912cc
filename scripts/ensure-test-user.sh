#!/usr/bin/env bash
# As root: makes sure the dedicated non-root user that runs packed binaries in tests and
# benchmarks exists, with a subordinate uid/gid range. Prints the user's name.
#
# With --neighbour: makes sure the second local user exists instead (it needs no
# subordinate range): the neighbour, or attacker, of the hardening tests
# (tests/tests/hardening.rs: a shared cache, a shared pid-file directory, a kept layer).
# Prints its name.
set -euo pipefail

[[ $(id -u) == 0 ]] || { echo "ensure-test-user.sh: must run as root" >&2; exit 1; }

create() {
    local user=$1
    if ! id "$user" >/dev/null 2>&1; then
        echo "ensure-test-user.sh: creating the user $user" >&2
        useradd --create-home --shell /bin/sh --user-group "$user"
    fi
}

if [[ ${1:-} == --neighbour ]]; then
    user=${BINCTR_NEIGHBOUR_USER_NAME:-binctr-neighbour}
    create "$user"
    echo "$user"
    exit 0
fi
[[ $# == 0 ]] || { echo "ensure-test-user.sh: usage: ensure-test-user.sh [--neighbour]" >&2; exit 2; }

user=${BINCTR_TEST_USER_NAME:-binctr-test}
# The subordinate range (used by the full-range mapping tests).
range=300000:65536

create "$user"
for file in /etc/subuid /etc/subgid; do
    touch "$file"
    grep -q "^$user:" "$file" || echo "$user:$range" >>"$file"
done
echo "$user"
