#!/usr/bin/env bash
# Proves the namespace cluster works end to end, then tears it down (as root):
#
#   bash ci/services/cluster/selftest.sh [--faults] [--keep]
#       --faults: also kill a node / cut a link mid-step (adds ~70 s); --keep: leave the cluster up
#
# Checks: up (timed), srun -N4 hostname = n01..n04, srun as the unprivileged user with 2 ranks per
# node, sbatch, salloc, cross-node mpi4py allreduce (srun --mpi=pmi2, Hydra+slurm, Hydra+ssh),
# Apptainer on every node as the user (when base.sif exists), down (timed), nothing left behind.
# MPI runs end with Barrier + os._exit(0): MPICH 4.0.2/UCX 1.13 can hang in MPI_Finalize over
# TCP (README.md, "MPI_Finalize hang"); the finalize path is tested separately, with a timeout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
C=("bash" "$here/cluster.sh")
D=${CONTPROBE_CLUSTER_DIR:-/var/tmp/contprobe-cluster}
U=${CONTPROBE_USER:-cpuser}
PY=${CONTPROBE_VENV:-/opt/contprobe/venv}/bin/python
IMG=${CONTPROBE_IMAGES:-/var/tmp/contprobe-images}/base.sif
fails=0
ok() { printf 'ok   %s\n' "$*"; }
bad() { printf 'FAIL %s\n' "$*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
AS_USER=(runuser -u "$U" -- env PATH="$D/bin:$PATH" SLURM_CONF="$D/etc/slurm.conf")

t0=$(date +%s.%N)
"${C[@]}" up
ok "up in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s"
export SLURM_CONF=$D/etc/slurm.conf
W=$(mktemp -d /tmp/cpcluster-selftest.XXXX); chmod 0777 "$W"; cd "$W"

check "srun -N4 hostname -> n01..n04" \
    test "$(timeout 30 srun -N4 hostname | sort | tr '\n' ' ')" = "n01 n02 n03 n04 "
check "srun as $U, -N4 -n8 -> 2 tasks per node" \
    test "$(timeout 30 "${AS_USER[@]}" srun -N4 -n8 hostname | sort | uniq -c | awk '{print $1 $2}' | tr '\n' ' ')" = "2n01 2n02 2n03 2n04 "

printf '#!/bin/bash\n#SBATCH -N2 -o %s/sb-%%j.out\nsrun hostname | sort\n' "$W" >"$W/job.sh"
jid=$("${AS_USER[@]}" sbatch --parsable "$W/job.sh")
for _ in $(seq 60); do squeue -h -j "$jid" 2>/dev/null | grep -q . || break; sleep 0.5; done
check "sbatch job $jid ran on n01 n02" test "$(tr '\n' ' ' <"$W/sb-$jid.out" 2>/dev/null)" = "n01 n02 "
check "salloc -N2 srun hostname" test "$(timeout 30 "${AS_USER[@]}" salloc -N2 srun hostname 2>/dev/null | sort | tr '\n' ' ')" = "n01 n02 "

cat >"$W/ar.py" <<'EOF'
import os, socket, sys
from mpi4py import MPI
c = MPI.COMM_WORLD
s = c.allreduce(c.rank, op=MPI.SUM)
# One file per rank: Hydra's slurm launcher can splice two ranks' stdout lines together.
with open(os.path.join(sys.argv[1], str(c.rank)), "w") as f:
    f.write(f"{c.rank} {c.size} {socket.gethostname()} {s}\n")
c.Barrier()
if "finalize" not in sys.argv:
    os._exit(0)   # skip MPI_Finalize (see README.md)
EOF
chmod 0644 "$W/ar.py"
# expect_ranks NAME CMD...: CMD OUTDIR leaves the 8 expected rank files (output shown on failure).
expect_ranks() {
    local name=$1 got; shift
    rm -rf "$W/out"; mkdir -m 0777 "$W/out"
    timeout 60 "$@" "$W/out" >"$W/err" 2>&1 || true
    got=$(cat "$W"/out/* 2>/dev/null | sort -n | tr '\n' ' ')
    if [[ $got == "$want" ]]; then ok "$name"; else bad "$name: got '$got'"; sed 's/^/     | /' "$W/err"; fi
}
want="0 8 n01 28 1 8 n01 28 2 8 n02 28 3 8 n02 28 4 8 n03 28 5 8 n03 28 6 8 n04 28 7 8 n04 28 "
if [[ -x $PY ]] && "$PY" -c 'import mpi4py' 2>/dev/null; then
    expect_ranks "mpi4py allreduce, srun --mpi=pmi2 -N4 -n8" \
        "${AS_USER[@]}" srun --mpi=pmi2 -N4 -n8 "$PY" "$W/ar.py"
    expect_ranks "mpi4py allreduce, Hydra -launcher slurm in salloc (-iface cpbr0)" \
        "${AS_USER[@]}" salloc -N4 mpiexec.hydra -launcher slurm -iface cpbr0 -n 8 -ppn 2 "$PY" "$W/ar.py"
    expect_ranks "mpi4py allreduce, Hydra ssh + hostfile from the host (-iface cpbr0)" \
        "${AS_USER[@]}" mpiexec.hydra -f "$D/hostfile" -iface cpbr0 -n 8 -ppn 2 "$PY" "$W/ar.py"
    # Informational: how often MPI_Finalize hangs (results are printed either way).
    hangs=0; mkdir -m 0777 "$W/fin"
    for _ in 1 2 3; do
        timeout -s KILL 20 runuser -u "$U" -- env SLURM_CONF="$SLURM_CONF" srun --mpi=pmi2 -N4 -n8 "$PY" "$W/ar.py" "$W/fin" finalize >/dev/null 2>&1 || hangs=$((hangs + 1))
        scancel -u "$U" 2>/dev/null || true
    done
    echo "info MPI_Finalize hung or failed in $hangs of 3 runs (known, see README.md)"
else
    echo "skip mpi4py checks: $PY has no mpi4py (run ci/setup.sh)"
fi
if [[ -r $IMG ]] && command -v apptainer >/dev/null; then
    check "apptainer exec base.sif hostname as $U on 4 nodes" \
        test "$(timeout 60 "${AS_USER[@]}" srun -N4 apptainer -s exec "$IMG" hostname | sort | tr '\n' ' ')" = "n01 n02 n03 n04 "
else
    echo "skip apptainer check: $IMG or apptainer missing"
fi

# --faults: a node killed / a link cut mid-step; Slurm must report it (~30 s each), then revive.
if [[ " $* " == *" --faults "* ]]; then
    for fault in kill-node link-down; do
        t0=$SECONDS
        timeout 120 "${AS_USER[@]}" srun -N4 -n4 sleep 300 >"$W/fault.out" 2>&1 &
        spid=$!
        for _ in $(seq 50); do [[ $(squeue -h -t R | wc -l) -gt 0 ]] && break; sleep 0.2; done
        sleep 1
        "${C[@]}" "$fault" n03
        wait "$spid" || true
        check "$fault n03: srun says 'Node failure on n03' ($((SECONDS - t0)) s)" grep -q 'Node failure on n03' "$W/fault.out"
        check "$fault n03: sinfo says down" test "$(sinfo -h -n n03 -o %t)" = "down*"
        "${C[@]}" revive-node n03
        for _ in $(seq 50); do [[ $(sinfo -h -n n03 -o %t) == idle ]] && break; sleep 0.2; done
        check "revive-node n03: idle again" test "$(sinfo -h -n n03 -o %t)" = idle
    done
fi

[[ " $* " == *" --keep "* ]] && { echo "cluster left up; $fails failure(s)"; exit $((fails > 0)); }
cd /; rm -rf "$W"
t0=$(date +%s.%N)
"${C[@]}" down
ok "down in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s"
# Nothing of ours may remain (zombies, which PID 1 reaps late here, are not processes).
left=$(ps -eo stat=,args= | awk '$1 !~ /^Z/' | grep -E "slurmctld|slurmd -f $D|munged .*$D|sshd -f $D" | grep -v grep || true)
check "no daemon left" test -z "$left"
check "no netns, uts mounts, veths or bridge left" \
    test -z "$(ls /run/netns 2>/dev/null; ls /run/uts 2>/dev/null; ip -br link | grep -E '^(cpbr0|vn[0-9])' || true)"
check "no /etc/hosts lines left" bash -c '! grep -q contprobe-cluster /etc/hosts'
echo "$fails failure(s)"
exit $((fails > 0))
