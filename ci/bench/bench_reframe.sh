#!/usr/bin/env bash
# contprobe against ReFrame, the peer, on six equivalent container checks, side by side on the same
# image in the same run (issue 8). Target (README): contprobe <= 0.5x ReFrame's wall time.
#
#   bash ci/bench/bench_reframe.sh                 # as root; containers run as $CONTPROBE_USER
#   N=7 IMG=/var/tmp/contprobe-images/mpich.sif bash ci/bench/bench_reframe.sh
#   QUICK=1 bash ci/bench/bench_reframe.sh         # N=1: a smoke run (CI), no figures worth quoting
#
# The six checks (ci/bench/reframe/checks.py for ReFrame; probe selection below for contprobe):
#   1 python3 --version   2 import pytest   3 import mpi4py   4 a bound file readable
#   5 a host variable passed   6 nvidia-smi absent
# ReFrame: reframe -r over checks.py with its default asynchronous policy, local scheduler and
#   launcher, Apptainer container platform (settings.py). ReFrame is installed into its own venv.
# contprobe: contprobe run IMG -B DIR:/bench-bind --expect-bind /bench-bind --expect-env BENCH_VAR=...
#   -k (the probes that make the same checks: the suite itself needs python3 and pytest; mpi.import,
#   binds.expected, env.expected, gpu.nvidia_smi).
# Also timed, for scale: one bare `apptainer exec IMG true`.
# Runs are interleaved (rfm, contprobe, bare) N times; medians are reported.
set -euo pipefail
umask 022
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=ci/bench/lib.sh
source "$HERE/lib.sh"
IMAGES=${CONTPROBE_IMAGES:-/var/tmp/contprobe-images}
IMG=${IMG:-$IMAGES/mpich.sif}
N=${N:-5}
[[ ${QUICK:-0} == 1 ]] && N=1
RUSER=${CONTPROBE_USER:-cpuser}
PY=${PY:-/opt/contprobe/venv/bin/python}
RFM_VENV=${RFM_VENV:-/opt/reframe-venv}
RFM_VERSION=${RFM_VERSION:-4.10.4}
WORK=${WORK:-/tmp/contprobe-bench-reframe}
log() { printf '[bench-reframe] %s\n' "$*" >&2; }

RFM_VENV=$RFM_VENV RFM_VERSION=$RFM_VERSION bash "$REPO/ci/provision/reframe.sh"
if [[ $(id -u) -eq 0 ]]; then as_user() { runuser -u "$RUSER" -- "$@"; }; else as_user() { "$@"; }; fi

rm -rf "$WORK" && mkdir -p "$WORK/bind" && echo bench >"$WORK/bind/probe.txt"
chmod -R a+rX "$WORK"
# the containers run as the unprivileged user, who writes its results here: theirs, not world-writable
[[ $(id -u) -eq 0 ]] && chown -R "$RUSER" "$WORK"
VAR=bench-$RANDOM
ENVV=(env "HOME=$WORK" "BENCH_VAR=$VAR" "BENCH_IMAGE=$IMG" "BENCH_BIND_DIR=$WORK/bind" "PYTHONPATH=$REPO"
      "PATH=/usr/local/bin:/usr/bin:/bin")
RFM=(as_user "${ENVV[@]}" "$RFM_VENV/bin/reframe" -C "$HERE/reframe/settings.py" -c "$HERE/reframe/checks.py" -r)
CP=(as_user "${ENVV[@]}" "$PY" -m contprobe run "$IMG" -B "$WORK/bind:/bench-bind" --expect-bind /bench-bind
    --expect-env "BENCH_VAR=$VAR" --no-rerun
    -k "(test_mpi and test_import) or (test_binds and test_expected) or (test_env and test_expected) or test_nvidia_smi")
BARE=(as_user "${ENVV[@]}" apptainer -s exec "$IMG" true)

cd "$WORK"
timed() {  # timed NAME CMD...: append the wall seconds to $WORK/NAME.times; fail loudly if CMD fails
    local name=$1; shift; local a b
    a=$(date +%s%N)
    if ! "$@" >"$WORK/$name.out" 2>&1; then log "$name failed:"; tail -30 "$WORK/$name.out" >&2; exit 1; fi
    b=$(date +%s%N)
    elapsed "$a" "$b" >>"$WORK/$name.times"
}
load0=$(cut -d' ' -f1-3 /proc/loadavg)
timed warmup-rfm "${RFM[@]}" --prefix "$WORK/rfm-warm"
timed warmup-cp "${CP[@]}" --out "$WORK/cp-warm"
for i in $(seq "$N"); do
    timed reframe "${RFM[@]}" --prefix "$WORK/rfm-$i"
    timed contprobe "${CP[@]}" --out "$WORK/cp-$i"
    timed bare "${BARE[@]}"
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)
grep -q "PASSED" "$WORK/contprobe.out" || { log "contprobe did not pass:"; cat "$WORK/contprobe.out" >&2; exit 1; }
grep -Eq "PASSED .*6/6|Ran 6/6" "$WORK/reframe.out" || { log "ReFrame did not pass 6/6:"; tail -20 "$WORK/reframe.out" >&2; exit 1; }
rfm=$(median <"$WORK/reframe.times"); cp=$(median <"$WORK/contprobe.times"); bare=$(median <"$WORK/bare.times")
ratio=$(awk -v a="$cp" -v b="$rfm" 'BEGIN{printf "%.2f", a/b}')
cat <<OUT
# contprobe vs ReFrame $("$RFM_VENV/bin/reframe" --version) on six container checks
$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $load0 -> $load1, image $(basename "$IMG"), N=$N, median seconds

| command | median [s] | all runs [s] |
|---|---|---|
| ReFrame (reframe -r, async policy) | $rfm | $(tr '\n' ' ' <"$WORK/reframe.times") |
| contprobe run | $cp | $(tr '\n' ' ' <"$WORK/contprobe.times") |
| bare apptainer exec IMG true | $bare | $(tr '\n' ' ' <"$WORK/bare.times") |

ratio contprobe / ReFrame = $ratio (target <= 0.50)
OUT
