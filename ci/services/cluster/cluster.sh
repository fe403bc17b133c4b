#!/usr/bin/env bash
# A small Slurm cluster of namespace "nodes" on this one machine, for contprobe's multi-node tests.
#
#   bash ci/services/cluster/cluster.sh install                 # packages + user only (ci/setup.sh calls it)
#   bash ci/services/cluster/cluster.sh up | down | status | env
#   bash ci/services/cluster/cluster.sh exec NODE CMD...        # run CMD (as root) inside node NODE
#   bash ci/services/cluster/cluster.sh kill-node NODE          # SIGKILL every process of NODE (slurmd, steps, sshd)
#   bash ci/services/cluster/cluster.sh revive-node NODE        # "reboot" NODE: kill leftovers, link up, daemons
#   bash ci/services/cluster/cluster.sh link-down|link-up NODE  # cut / restore NODE's network link
#
# A node nXX is: a network namespace (/run/netns/nXX) with a veth onto our bridge cpbr0 and address
# 10.203.0.(10+X); a persistent UTS namespace (/run/uts/nXX) whose hostname is nXX; and, for each
# daemon started in it, a private mount namespace (slave of the host's) where a per-node fake
# /proc/sys/kernel/random/boot_id is bind-mounted, so UCX sees 4 different hosts (see README.md).
# The host runs munged and slurmctld (on 10.203.0.1); each node runs slurmd -N nXX and an sshd.
# Every daemon is tracked by a pidfile under $CONTPROBE_CLUSTER_DIR/run; `down` also sweeps every
# process left in the nodes' network namespaces. Only loopback and 10.203.0.0/24 are used.
# Root only. README.md (next to this file) has timings, pitfalls and the fixture interface.
set -euo pipefail

D=${CONTPROBE_CLUSTER_DIR:-/var/tmp/contprobe-cluster}   # all state, config, logs
NNODES=${CONTPROBE_CLUSTER_NODES:-4}                      # n01..nNN (1..9)
CPUS=${CONTPROBE_CLUSTER_CPUS:-2}                         # CPUs Slurm believes each node has
CPUSER=${CONTPROBE_USER:-cpuser}                          # unprivileged user that runs jobs
FAKE_BOOT_ID=${CONTPROBE_CLUSTER_FAKE_BOOT_ID:-1}         # 0: nodes share the host's boot_id
BR=cpbr0
NET=10.203.0
HOST_IP=$NET.1
TAG='# contprobe-cluster'                                 # marks our /etc/hosts lines
export SLURM_CONF=$D/etc/slurm.conf
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

NODES=()
for ((i = 1; i <= NNODES; i++)); do NODES+=("$(printf 'n%02d' "$i")"); done

log() { printf '[cluster %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
node_ip() { echo "$NET.$((10 + 10#${1#n}))"; }
is_node() { local n; for n in "${NODES[@]}"; do [[ $n == "$1" ]] && return 0; done; return 1; }
need_node() { [[ $# -ge 1 ]] && is_node "$1" || die "unknown node '${1:-}' (nodes: ${NODES[*]})"; }

# alive PIDFILE COMM: the pid in PIDFILE runs a process named COMM (not a zombie). The name check
# protects against pid reuse; the zombie check matters because PID 1 here reaps slowly.
alive() {
    local pid st
    # the daemon may remove its own pidfile as it exits (munged does): gone between test and read
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/stat ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    [[ $st != Z && $st != X ]]
}

# stop PIDFILE COMM: TERM, wait up to 5 s, then KILL.
stop() {
    local pid i
    alive "$1" "$2" || { rm -f "$1"; return 0; }
    pid=$(cat "$1" 2>/dev/null) || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$1" "$2" || break; sleep 0.1; done
    alive "$1" "$2" && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

# Processes whose network namespace is node $1's (slurmd, slurmstepd, job tasks, apptainer
# children, sshd and its sessions). Zombies have no ns link and are skipped.
node_pids() {
    local want p
    want=$(stat -L -c %i "/run/netns/$1" 2>/dev/null) || return 0
    for p in /proc/[0-9]*; do
        [[ $(stat -L -c %i "$p/ns/net" 2>/dev/null) == "$want" ]] && echo "${p#/proc/}"
    done
    return 0
}

kill_node_procs() {
    local i pids
    for ((i = 0; i < 50; i++)); do
        mapfile -t pids < <(node_pids "$1")
        [[ ${#pids[@]} -eq 0 ]] && return 0
        kill -KILL "${pids[@]}" 2>/dev/null || true
        sleep 0.1
    done
    log "WARNING: processes still in $1 after 5 s: ${pids[*]}"
}

# node_run NODE CMD...: CMD in NODE's net + UTS namespaces and a fresh private mount namespace
# (slave, so host mounts/unmounts still propagate in) with the node's fake boot_id mounted.
# The sh -c script is constant; the command travels as positional arguments (no eval).
node_run() {
    local n=$1; shift
    # The mode chosen at 'up' (kept in $D/fake_boot_id) wins, so exec matches the node's daemons.
    if [[ $(cat "$D/fake_boot_id" 2>/dev/null || echo "$FAKE_BOOT_ID") == 0 ]]; then   # all nodes share the real boot_id (UCX then uses shm across nodes)
        nsenter --net="/run/netns/$n" --uts="/run/uts/$n" 9>&- -- "$@"
        return
    fi
    nsenter --net="/run/netns/$n" --uts="/run/uts/$n" 9>&- -- \
        unshare --mount --propagation slave -- \
        /bin/sh -c 'mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$@"' \
        "$D/nodes/$n/boot_id" "$@"
}

# ---------------------------------------------------------------------------------------------
ensure_packages() {
    local p need=()
    for p in slurmctld slurmd slurm-client munge openssh-server; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
    done
    [[ ${#need[@]} -eq 0 ]] && return 0
    log "installing ${need[*]} (~20 s)"
    # No systemd here: the packages' postinst cannot start anything (policy-rc.d / invoke-rc.d).
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
        --no-install-recommends "${need[@]}" >/dev/null
}

ensure_user() {
    local f start
    id "$CPUSER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$CPUSER"
    for f in /etc/subuid /etc/subgid; do   # apptainer's user namespace needs a 65536 range
        grep -q "^$CPUSER:" "$f" 2>/dev/null && continue
        start=$(awk -F: '{e = $2 + $3; if (e > m) m = e} END {print (m > 100000 ? m : 100000)}' "$f" 2>/dev/null || echo 100000)
        echo "$CPUSER:$start:65536" >>"$f"
    done
}

write_config() {
    local n nodes tmp ctlhost
    ctlhost=$(hostname -s)   # slurmctld only starts if this matches its own hostname
    nodes=$(IFS=,; echo "${NODES[*]}")
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Generated by ci/services/cluster/cluster.sh; regenerated on every 'up'.
ClusterName=contprobe
SlurmctldHost=$ctlhost($HOST_IP)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
# Our own munged, socket under \$D: nothing shared with a system munge.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.socket
StateSaveLocation=$D/spool/ctld
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroup plugins: the namespace nodes share one cgroup tree.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=pmi2
# Rlimits of the submitting shell cannot always be raised in the sandbox; don't try.
PropagateResourceLimits=NONE
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Trust CPUs= below even though the machine has 2 cores (lets -n8 run 2 per node).
SlurmdParameters=config_overrides
# A node that comes back (revive-node, re-up) returns to service by itself.
ReturnToService=2
SlurmdTimeout=20
SlurmctldTimeout=30
MessageTimeout=10
KillWait=5
InactiveLimit=0
MinJobAge=300
SchedulerType=sched/backfill
EOF
    for n in "${NODES[@]}"; do
        echo "NodeName=$n NodeAddr=$(node_ip "$n") NodeHostname=$n CPUs=$CPUS RealMemory=1024 State=UNKNOWN" >>"$tmp"
    done
    echo "PartitionName=debug Nodes=$nodes Default=YES MaxTime=INFINITE State=UP" >>"$tmp"
    if ! cmp -s "$tmp" "$SLURM_CONF"; then
        install -m 0644 "$tmp" "$SLURM_CONF"
        alive "$D/run/slurmctld.pid" slurmctld && log "WARNING: slurm.conf changed while running; run down + up"
    fi
    rm -f "$tmp"
}

start_munge() {
    local i
    mkdir -p /run/munge && chown munge:munge /run/munge   # what munge's own tools expect
    install -d -o munge -g munge -m 0755 "$D/munge"         # munged refuses group/other-writable dirs
    if [[ ! -s $D/munge/munge.key ]]; then                  # a key of our own, not /etc/munge's
        head -c 1024 /dev/urandom >"$D/munge/munge.key"
        chown munge:munge "$D/munge/munge.key"; chmod 0400 "$D/munge/munge.key"
    fi
    if ! alive "$D/munge/munged.pid" munged; then
        rm -f "$D/munge/munge.socket" "$D/munge/munge.socket.lock"
        runuser -u munge -- munged 9>&- --key-file="$D/munge/munge.key" --socket="$D/munge/munge.socket" \
            --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" \
            --seed-file="$D/munge/munged.seed"
    fi
    # The pidfile alone is not proof: check a credential round trip.
    for ((i = 0; i < 50; i++)); do
        munge -S "$D/munge/munge.socket" -n 2>/dev/null | unmunge -S "$D/munge/munge.socket" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged does not answer (see $D/munge/munged.log)"
}

setup_ssh() {
    local u
    mkdir -p "$D/ssh/keys" "$D/ssh/authorized_keys" /run/sshd   # /run/sshd: privsep dir
    [[ -s $D/ssh/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -f "$D/ssh/ssh_host_ed25519_key"
    cat >"$D/ssh/sshd_config" <<EOF
# One sshd per node, each in its own netns, listening on the node's address only.
HostKey $D/ssh/ssh_host_ed25519_key
AuthorizedKeysFile $D/ssh/authorized_keys/%u
# Keys live under \$D, not in the users' homes.
StrictModes no
UsePAM yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
EOF
    # One key pair per user who may ssh between nodes (root and $CPUSER), owned by that user.
    for u in root "$CPUSER"; do
        install -d -o "$u" -g "$(id -gn "$u")" -m 0700 "$D/ssh/keys/$u"
        [[ -s $D/ssh/keys/$u/id_ed25519 ]] || runuser -u "$u" -- ssh-keygen -q -t ed25519 -N '' -f "$D/ssh/keys/$u/id_ed25519"
        install -m 0644 "$D/ssh/keys/$u/id_ed25519.pub" "$D/ssh/authorized_keys/$u"
    done
    cat >"$D/ssh/ssh_config" <<EOF
Host *
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
    BatchMode yes
    IdentitiesOnly yes
EOF
    # $D/bin/ssh: the ssh that Hydra's ssh launcher finds first in PATH (key per calling user).
    mkdir -p "$D/bin"
    cat >"$D/bin/ssh" <<EOF
#!/bin/sh
exec /usr/bin/ssh -F "$D/ssh/ssh_config" -i "$D/ssh/keys/\$(id -un)/id_ed25519" "\$@"
EOF
    chmod 0755 "$D/bin/ssh"
}

setup_bridge() {
    ip link show "$BR" >/dev/null 2>&1 || ip link add "$BR" type bridge
    ip addr replace "$HOST_IP/24" dev "$BR"
    ip link set "$BR" up
}

setup_node() {
    local n=$1 ip
    ip=$(node_ip "$n")
    mkdir -p "$D/nodes/$n" "$D/spool/$n" /run/uts
    # A fresh boot_id per node per 'up' (like a reboot): UCX keys "same host" on it.
    [[ -s $D/nodes/$n/boot_id ]] || cat /proc/sys/kernel/random/uuid >"$D/nodes/$n/boot_id"
    [[ -e /run/netns/$n ]] || ip netns add "$n"
    ip -n "$n" link set lo up
    # `ip netns exec` alone keeps the host's hostname: a UTS namespace pinned by a bind mount.
    if ! nsenter --uts="/run/uts/$n" true 2>/dev/null; then
        touch "/run/uts/$n"
        unshare --uts="/run/uts/$n" hostname "$n"
    fi
    if ! ip link show "v$n" >/dev/null 2>&1; then
        ip link add "v$n" type veth peer name eth0 netns "$n"
    fi
    ip link set "v$n" master "$BR" up
    ip -n "$n" addr replace "$ip/24" dev eth0
    ip -n "$n" link set eth0 up   # no default route: anything outside 10.203.0.0/24 is unreachable
}

start_node_daemons() {
    local n=$1
    alive "$D/run/slurmd-$n.pid" slurmd || node_run "$n" slurmd -f "$SLURM_CONF" -N "$n"
    alive "$D/run/sshd-$n.pid" sshd ||
        node_run "$n" /usr/sbin/sshd -f "$D/ssh/sshd_config" -o "ListenAddress=$(node_ip "$n")" \
            -o "PidFile=$D/run/sshd-$n.pid" -E "$D/log/sshd-$n.log"
}

write_hosts() {
    local n tmp
    tmp=$(mktemp)
    grep -vF "$TAG" /etc/hosts >"$tmp" || true
    for n in "${NODES[@]}"; do printf '%s\t%s %s\n' "$(node_ip "$n")" "$n" "$TAG" >>"$tmp"; done
    cat "$tmp" >/etc/hosts   # in place: /etc/hosts may be a bind mount that cannot be renamed over
    rm -f "$tmp"
}

write_env() {
    # Sourceable by sh, and trivially parsed (KEY=VALUE) by a Python fixture.
    cat >"$D/env" <<EOF
SLURM_CONF=$SLURM_CONF
CONTPROBE_CLUSTER_DIR=$D
CONTPROBE_CLUSTER_NODES=$(IFS=,; echo "${NODES[*]}")
CONTPROBE_CLUSTER_HOSTFILE=$D/hostfile
CONTPROBE_CLUSTER_BIN=$D/bin
EOF
    printf '%s\n' "${NODES[@]}" >"$D/hostfile"
    chmod 0644 "$D/env" "$D/hostfile"
}

wait_idle() {
    local i states
    for ((i = 0; i < 300; i++)); do
        states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u | awk '{print $2}' | sort -u | tr '\n' ' ')
        [[ $states == 'idle ' ]] && return 0
        sleep 0.2
    done
    sinfo -N >&2 || true
    die "nodes not idle after 60 s (states: ${states:-none}); logs in $D/log"
}

cmd_up() {
    local t0=$SECONDS n i
    ensure_packages
    ensure_user
    mkdir -p "$D/etc" "$D/log" "$D/run" "$D/spool/ctld" "$D/nodes"
    chmod 0755 "$D" "$D/etc"
    write_config
    # boot_id mode: fixed while the cluster is up (the running daemons already have theirs).
    alive "$D/run/slurmctld.pid" slurmctld && [[ -s $D/fake_boot_id ]] || echo "$FAKE_BOOT_ID" >"$D/fake_boot_id"
    start_munge
    setup_ssh
    setup_bridge
    for n in "${NODES[@]}"; do setup_node "$n"; done
    write_hosts
    if ! alive "$D/run/slurmctld.pid" slurmctld; then
        slurmctld -f "$SLURM_CONF" 9>&-
    fi
    for ((i = 0; i < 100; i++)); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
    for n in "${NODES[@]}"; do start_node_daemons "$n"; done
    write_env
    wait_idle
    chmod -R a+rX "$D/etc" "$D/bin" "$D/log"
    log "up: ${NODES[*]} idle in $((SECONDS - t0)) s; SLURM_CONF=$SLURM_CONF"
}

# Slurm clients on the host (srun, salloc, sbatch, ...) whose environment names this cluster's
# SLURM_CONF: after 'down' they would wait forever for a controller that is gone.
client_pids() {
    local p
    for p in /proc/[0-9]*; do
        case $(cat "$p/comm" 2>/dev/null) in
            srun | salloc | sbatch | sattach | scancel | scontrol | sinfo | squeue) ;;
            *) continue ;;
        esac
        tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -qxF "SLURM_CONF=$SLURM_CONF" && echo "${p#/proc/}"
    done
    return 0
}

# The given pids and all their descendants (salloc runs its command as a child on the host).
with_descendants() {
    ps -eo pid=,ppid= | awk -v roots="$*" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { parent[$1] = $2 }
        END { do { added = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; added = 1 } } while (added)
              for (p in keep) print p }'
}

cmd_down() {
    local t0=$SECONDS n d pids
    # Also the nodes of an 'up' that ran with another CONTPROBE_CLUSTER_NODES ($D/nodes/nXX).
    for d in "$D"/nodes/n[0-9][0-9]; do [[ -d $d ]] && ! is_node "${d##*/}" && NODES+=("${d##*/}"); done
    mapfile -t pids < <(client_pids)
    if [[ ${#pids[@]} -gt 0 ]]; then
        mapfile -t pids < <(with_descendants "${pids[@]}")
        log "ending Slurm clients of this cluster and their children: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
    for n in "${NODES[@]}"; do
        [[ -e /run/netns/$n ]] && kill_node_procs "$n"
        rm -f "$D/run/slurmd-$n.pid" "$D/run/sshd-$n.pid"
    done
    stop "$D/run/slurmctld.pid" slurmctld
    stop "$D/munge/munged.pid" munged
    for n in "${NODES[@]}"; do
        ip link del "v$n" 2>/dev/null || true
        [[ -e /run/netns/$n ]] && ip netns del "$n"
        if [[ -e /run/uts/$n ]]; then umount "/run/uts/$n" 2>/dev/null || true; rm -f "/run/uts/$n"; fi
        rm -rf "${D:?}/nodes/$n" "${D:?}/spool/$n"
    done
    ip link del "$BR" 2>/dev/null || true
    rmdir /run/uts 2>/dev/null || true
    if grep -qF "$TAG" /etc/hosts; then
        local tmp; tmp=$(mktemp)
        grep -vF "$TAG" /etc/hosts >"$tmp" || true
        cat "$tmp" >/etc/hosts; rm -f "$tmp"
    fi
    # Job state goes (a fresh cluster each time); config, keys and logs stay for inspection.
    rm -rf "${D:?}/spool" "${D:?}/run" "$D/env" "$D/hostfile" "$D/fake_boot_id"
    log "down in $((SECONDS - t0)) s"
}

cmd_status() {
    local n rc=0
    printf '%-10s %s\n' munged "$(alive "$D/munge/munged.pid" munged && echo up || echo DOWN)"
    printf '%-10s %s\n' slurmctld "$(alive "$D/run/slurmctld.pid" slurmctld && echo up || echo DOWN)"
    for n in "${NODES[@]}"; do
        printf '%-10s slurmd %s, sshd %s, link %s\n' "$n" \
            "$(alive "$D/run/slurmd-$n.pid" slurmd && echo up || echo DOWN)" \
            "$(alive "$D/run/sshd-$n.pid" sshd && echo up || echo DOWN)" \
            "$(ip -br link show "v$n" 2>/dev/null | awk '{print $2}' || echo none)"
    done
    alive "$D/run/slurmctld.pid" slurmctld || return 1
    sinfo -N -o '%N %6t %c %E' || rc=1
    return $rc
}

cmd_env() {
    [[ -s $D/env ]] || die "cluster is not up"
    sed 's/^/export /' "$D/env"
    echo "export PATH=$D/bin:\$PATH"
}

# ---------------------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root"
[[ $NNODES =~ ^[1-9]$ ]] || die "CONTPROBE_CLUSTER_NODES must be 1..9"
cmd=${1:-}
shift || true
# Serialize concurrent calls (e.g. several pytest workers calling up/down). Every daemon is started
# with fd 9 closed: an inherited copy would hold the lock for the daemon's lifetime.
mkdir -p /run/lock
exec 9>/run/lock/contprobe-cluster.lock
[[ $cmd == exec ]] || flock 9
case $cmd in
    install) ensure_packages; ensure_user; log "installed: slurmctld slurmd slurm-client munge openssh-server, user $CPUSER" ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    exec)
        need_node "$@"; n=$1; shift
        [[ $# -ge 1 ]] || die "usage: exec NODE CMD..."
        exec 9>&-
        node_run "$n" "$@" ;;
    kill-node) need_node "$@"; kill_node_procs "$1"; rm -f "$D/run/slurmd-$1.pid" "$D/run/sshd-$1.pid"; log "killed $1" ;;
    link-down) need_node "$@"; ip link set "v$1" down; log "link of $1 down" ;;
    link-up) need_node "$@"; ip link set "v$1" up; log "link of $1 up" ;;
    revive-node)   # a reboot: leftover job processes die, new boot_id, link up, fresh daemons
        need_node "$@"; kill_node_procs "$1"; rm -f "$D/run/slurmd-$1.pid" "$D/run/sshd-$1.pid" "$D/nodes/$1/boot_id"
        setup_node "$1"; start_node_daemons "$1"; log "revived $1" ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
