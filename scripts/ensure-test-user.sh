#!/usr/bin/env bash
# As root: makes sure the dedicated non-root user that runs packed binaries in tests and
# benchmarks exists, with a subordinate uid/gid range. Prints the user's name.
set -euo pipefail

user=${BINCTR_TEST_USER_NAME:-binctr-test}
# The subordinate range (used by the full-range mapping tests).
range=300000:65536

[[ $(id -u) == 0 ]] || { echo "ensure-test-user.sh: must run as root" >&2; exit 1; }
if ! id "$user" >/dev/null 2>&1; then
    echo "ensure-test-user.sh: creating the user $user" >&2
    useradd --create-home --shell /bin/sh --user-group "$user"
fi
for file in /etc/subuid /etc/subgid; do
    touch "$file"
    grep -q "^$user:" "$file" || echo "$user:$range" >>"$file"
done
echo "$user"
