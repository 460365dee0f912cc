#!/usr/bin/env bash
# A real Slurm cluster of three nodes on this one machine, for tests/tests/slurm.rs
# (issue 14: packed files under srun and sbatch, MPI ranks over PMIx and PMI2).
#
#   slurm-cluster.sh start    start it (a no-op when it runs with this script's settings;
#                             a cluster left half-started or from another version of this
#                             script is stopped and started afresh)
#   slurm-cluster.sh stop     cancel every job, stop the daemons, remove everything
#   slurm-cluster.sh status   exit 0 and show the nodes when it runs, else exit 3
#
# What runs (no systemd: each daemon is started by hand and daemonises):
#   munged      as the munge user, on its own socket (STATE/munge/munge.socket.2)
#   slurmctld   as root, in its own UTS namespace (hostname binctr-ctld), cleared state
#               (-c: a node once drained as INVAL would otherwise stay drained)
#   slurmd x3   `slurmd -N n1` .. n3 (Debian builds slurmd with multiple-slurmd support),
#               all on 127.0.0.1, ports 17001-17003, each in its own mount and UTS
#               namespace: hostname nK, /tmp and /var/tmp bound from STATE/nodes/nK/
#               (node-local disks: the host sees node nK's /tmp at STATE/nodes/nK/tmp),
#               and a /dev/shm of its own (a fresh tmpfs)
# Each node advertises 8 CPUs whatever the machine has (SlurmdParameters=config_overrides),
# and the partition shares them (OverSubscribe=FORCE:4), so jobs of parallel tests fit.
# proctrack/cgroup on the cgroup v1 freezer hierarchy (cgroup/v1, no automount, nothing
# constrained): what a cluster uses to find and signal every process of a step.
# KillWait=5: SIGTERM (scancel, a time limit) is followed by SIGKILL 5 s later, not 30.
#
# Clients need SLURM_CONF=STATE/etc/slurm.conf (nothing is written to /etc/slurm).
# STATE/shared (mode 1777) is a directory every node sees at the same path: the tests keep
# their packed files, job scripts and volumes there (each node has its own /tmp).
# Must run as root. Installs slurm-wlm, munge and libpmix-dev (srun --mpi=pmix loads
# libpmix.so) when missing.
set -euo pipefail

state=/var/lib/binctr-slurm
conf=$state/etc/slurm.conf
munge_socket=$state/munge/munge.socket.2
nodes=(n1 n2 n3)
ports=(17001 17002 17003)
ctld_port=16817
ctld_host=binctr-ctld
export SLURM_CONF=$conf

say() { printf 'slurm-cluster.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() { say "usage: slurm-cluster.sh start|stop|status"; exit 2; }
[[ $# == 1 ]] || usage
action=$1

[[ $(id -u) == 0 ]] || die "must run as root (it starts munged, slurmctld and slurmd)"

# The pid in a pid file, when that process still runs.
live_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Waits up to $2 seconds for the process $1 to end.
wait_gone() {
    local pid=$1 tries=$(($2 * 10))
    while kill -0 "$pid" 2>/dev/null && ((tries-- > 0)); do sleep 0.1; done
    ! kill -0 "$pid" 2>/dev/null
}

# Ends the process in a pid file: TERM, then KILL after $2 seconds.
end_pid_file() {
    local pid
    pid=$(live_pid "$1") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" "$2" && return 0
    say "$(basename "$1" .pid) (pid $pid) ignored SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || die "pid $pid ($1) does not die"
}

stamp() { sha256sum "$0" | cut -d' ' -f1; }

is_running() {
    [[ -f $state/stamp ]] || return 1
    live_pid "$state/run/munged.pid" >/dev/null || return 1
    live_pid "$state/run/slurmctld.pid" >/dev/null || return 1
    local n
    for n in "${nodes[@]}"; do
        live_pid "$state/run/slurmd-$n.pid" >/dev/null || return 1
    done
    timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
}

# Every node idle (or allocated/mixed: running jobs), none down, drained or invalid.
nodes_ready() {
    local states
    states=$(timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null) || return 1
    [[ $(wc -l <<<"$states") == "${#nodes[@]}" ]] || return 1
    ! grep -qvE ' (idle|alloc|mix)$' <<<"$states"
}

# The processes left in the nodes' mount namespaces once their slurmd is gone (slurmstepd,
# job processes; a slurmstepd whose PMIx client was refused lingers): ours to end, found
# by the namespaces recorded at start, in one pass over /proc.
end_node_leftovers() {
    local n ns link path pid
    declare -A node_of=()
    for n in "${nodes[@]}"; do
        ns=$(cat "$state/run/$n.mntns" 2>/dev/null) || continue
        node_of[$ns]=$n
    done
    while read -r link path; do
        ((${#node_of[@]})) && [[ -n ${node_of[$link]:-} ]] || continue
        pid=${path#/proc/}
        pid=${pid%%/*}
        say "node ${node_of[$link]}: ending leftover pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80))"
        kill -KILL "$pid" 2>/dev/null || true
    done < <(find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/ns/mnt' -printf '%l %p\n' 2>/dev/null)
    # Processes of jobs in namespaces of their own (containers) are still in the node's
    # cgroups.
    local procs
    for n in "${nodes[@]}"; do
        for procs in $(find /sys/fs/cgroup/*/slurm_"$n" -name cgroup.procs 2>/dev/null); do
            while read -r pid; do
                say "node $n: ending leftover pid $pid in $(dirname "$procs") ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80))"
                kill -KILL "$pid" 2>/dev/null || true
            done <"$procs"
        done
    done
}

# The cgroups Slurm made for the nodes (slurm_n1 ... under each v1 hierarchy), deepest
# first; empty ones only (rmdir fails on a cgroup with processes).
remove_cgroups() {
    local n dir tries
    for n in "${nodes[@]}"; do
        for dir in /sys/fs/cgroup/*/slurm_"$n"; do
            [[ -d $dir ]] || continue
            tries=20 # killed processes may take a moment to be reaped
            while ! find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null && ((tries-- > 0)); do
                sleep 0.1
            done
            [[ ! -d $dir ]] || say "warning: $dir is left (processes still in it?)"
        done
    done
}

stop() {
    [[ -d $state ]] || { say "not running (no $state)"; return 0; }
    if live_pid "$state/run/slurmctld.pid" >/dev/null; then
        # Jobs first: slurmd's shutdown leaves running steps behind.
        local jobs
        jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            say "cancelling jobs: $(echo $jobs)"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            local tries=200
            while [[ -n $(timeout 10 squeue -h -o %i 2>/dev/null || true) ]] && ((tries-- > 0)); do
                sleep 0.1
            done
        fi
        timeout 10 scontrol shutdown >/dev/null 2>&1 || true
    fi
    local n
    for n in "${nodes[@]}"; do end_pid_file "$state/run/slurmd-$n.pid" 10; done
    end_pid_file "$state/run/slurmctld.pid" 10
    end_node_leftovers
    end_pid_file "$state/run/munged.pid" 5
    remove_cgroups
    rm -rf "$state"
    say "stopped; $state removed"
}

write_config() {
    mkdir -p "$state"/{etc,log,run,ctld,spool,munge}
    chmod 0755 "$state"
    mkdir -p -m 1777 "$state/shared"
    chmod 1777 "$state/shared"
    local n
    for n in "${nodes[@]}"; do
        mkdir -p "$state/nodes/$n/tmp" "$state/nodes/$n/var-tmp" "$state/spool/$n"
        chmod 1777 "$state/nodes/$n/tmp" "$state/nodes/$n/var-tmp"
    done
    chown munge:munge "$state/munge"
    chmod 0755 "$state/munge"
    cat >"$conf" <<CONF
# Written by scripts/slurm-cluster.sh: a test cluster of three slurmd on one machine.
ClusterName=binctr
SlurmctldHost=$ctld_host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$munge_socket
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdSpoolDir=$state/spool/%n
SlurmdPidFile=$state/run/slurmd-%n.pid
SlurmdLogFile=$state/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/cgroup
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=60
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=20
NodeName=n[1-3] NodeAddr=127.0.0.1 Port=[17001-17003] CPUs=8 RealMemory=1024 State=UNKNOWN
PartitionName=debug Nodes=n[1-3] Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
    cat >"$state/etc/cgroup.conf" <<CONF
# Written by scripts/slurm-cluster.sh: proctrack/cgroup on the v1 hierarchies as mounted.
CgroupPlugin=cgroup/v1
CgroupAutomount=no
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=no
ConstrainSwapSpace=no
CONF
    chmod 0644 "$conf" "$state/etc/cgroup.conf"
}

# Waits up to $2 seconds for a pid file to name a live process.
wait_pid_file() {
    local tries=$(($2 * 10))
    until live_pid "$1" >/dev/null; do
        ((tries-- > 0)) || return 1
        sleep 0.1
    done
}

start() {
    if is_running && [[ $(cat "$state/stamp") == "$(stamp)" ]] && nodes_ready; then
        say "already running (SLURM_CONF=$conf)"
        return 0
    fi
    if [[ -d $state ]]; then
        say "a previous cluster (stopped, half-started or of another script version) is in $state: stopping it"
        stop
    fi

    local missing=() pair
    for pair in munged:munge slurmctld:slurmctld slurmd:slurmd srun:slurm-client \
        unshare:util-linux runuser:util-linux; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
    done
    [[ -e /usr/lib/x86_64-linux-gnu/libpmix.so ]] || missing+=(libpmix-dev)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2 || {
            apt-get update -q </dev/null >&2
            apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2
        }
    fi
    [[ -s /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing (reinstall munge, or create it with mungekey)"
    [[ -d /sys/fs/cgroup/freezer ]] ||
        die "no cgroup v1 freezer hierarchy at /sys/fs/cgroup/freezer (proctrack/cgroup with cgroup/v1 needs it)"
    local port
    for port in "$ctld_port" "${ports[@]}"; do
        if ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
            die "port $port is in use (another Slurm?): $(ss -Htlnp "sport = :$port" | head -n1)"
        fi
    done

    write_config
    local start=$SECONDS

    # munged, as the munge user, on our own socket.
    runuser -u munge -- munged --socket="$munge_socket" --pid-file="$state/munge/munged.pid" \
        --log-file="$state/munge/munged.log" --seed-file="$state/munge/munged.seed" </dev/null ||
        die "munged did not start: $(tail -n3 "$state/munge/munged.log" 2>/dev/null)"
    wait_pid_file "$state/munge/munged.pid" 10 || die "munged wrote no pid file: $(tail -n3 "$state/munge/munged.log")"
    ln -sf "$state/munge/munged.pid" "$state/run/munged.pid"

    # slurmctld, in a UTS namespace of its own so that its hostname is SlurmctldHost.
    unshare --uts -- sh -c "hostname $ctld_host && exec slurmctld -c" </dev/null ||
        die "slurmctld did not start: $(tail -n3 "$state/log/slurmctld.log" 2>/dev/null)"
    wait_pid_file "$state/run/slurmctld.pid" 15 || die "slurmctld is not running: $(tail -n3 "$state/log/slurmctld.log")"

    # One slurmd per node, each with its own hostname, /tmp, /var/tmp and /dev/shm.
    local i n
    for i in "${!nodes[@]}"; do
        n=${nodes[$i]}
        unshare --mount --uts --propagation private -- sh -c "
            set -e
            hostname $n
            mount --bind '$state/nodes/$n/tmp' /tmp
            mount --bind '$state/nodes/$n/var-tmp' /var/tmp
            mount -t tmpfs -o mode=1777,nosuid,nodev,size=2g shm-$n /dev/shm
            exec slurmd -N $n" </dev/null ||
            die "slurmd -N $n did not start: $(tail -n3 "$state/log/slurmd-$n.log" 2>/dev/null)"
        wait_pid_file "$state/run/slurmd-$n.pid" 15 || die "slurmd -N $n is not running: $(tail -n3 "$state/log/slurmd-$n.log")"
        readlink "/proc/$(live_pid "$state/run/slurmd-$n.pid")/ns/mnt" >"$state/run/$n.mntns"
    done

    local tries=300
    until nodes_ready; do
        ((tries-- > 0)) || die "the nodes are not idle after 30 s: $(timeout 10 sinfo -h -N -o '%N %t %E' | tr '\n' ';') (logs in $state/log)"
        sleep 0.1
    done
    stamp >"$state/stamp"
    say "started in $((SECONDS - start)) s: nodes ${nodes[*]} (SLURM_CONF=$conf, shared directory $state/shared)"
}

status() {
    if is_running; then
        echo "running: SLURM_CONF=$conf; shared directory $state/shared; node-local /tmp of nK: $state/nodes/nK/tmp"
        timeout 10 sinfo -N -o '%N %t %c %E'
        [[ $(cat "$state/stamp") == "$(stamp)" ]] || echo "(started by another version of this script: 'start' restarts it)"
        return 0
    fi
    if [[ -d $state ]]; then
        echo "not running (a partial cluster is left in $state: 'stop' removes it, 'start' restarts it)"
    else
        echo "not running"
    fi
    return 3
}

case $action in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
