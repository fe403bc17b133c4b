#!/usr/bin/env bash
# Wall time of `contprobe doctor` on this machine (host, no container): the whole suite and
# `-m "env or binds"` alone, median of N runs each (interleaved), plus the doctor table of one run.
#
#   bash ci/bench/bench_doctor.sh                  # as whoever runs it; figures go to ci/bench/BENCHMARKS.md by hand
#   N=9 DOCTOR_USER=cpuser bash ci/bench/bench_doctor.sh
#   XDIST=2 bash ci/bench/bench_doctor.sh          # also the whole suite over 2 pytest-xdist workers
#
# Environment: N (default 5), PY (Python with contprobe's deps; default /opt/contprobe/venv/bin/python,
# else /tmp/devu/bin/python, else python3), DOCTOR_USER (run doctor as this user via runuser; default:
# the current user), WORK (scratch dir, default /tmp/contprobe-bench-doctor; doctor runs from there),
# XDIST (worker count; needs `pip install pytest-xdist` in PY's environment, which contprobe does not
# declare: this measurement is why).
# contprobe is run from this checkout: PYTHONPATH=<repo> $PY -m contprobe doctor.
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
N=${N:-5}
WORK=${WORK:-/tmp/contprobe-bench-doctor}
DUSER=${DOCTOR_USER:-}

log() { printf '[bench-doctor] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ -n $DUSER && $DUSER != "$(id -un)" ]]; then
    [[ $(id -u) -eq 0 ]] || die "DOCTOR_USER needs root (runuser)"
    as_user() { runuser -u "$DUSER" -- "$@"; }
else
    as_user() { "$@"; }
fi
if [[ -z ${PY:-} ]]; then
    for PY in /opt/contprobe/venv/bin/python /tmp/devu/bin/python python3; do
        as_user "$PY" -c 'import junitparser, tabulate, pytest' 2>/dev/null && break
        PY=
    done
fi
[[ -n $PY ]] || die "no Python with contprobe's deps (pytest, junitparser, tabulate); set PY"

rm -rf "$WORK"
mkdir -p "$WORK"
[[ -n $DUSER ]] && chown "$DUSER" "$WORK"
cd "$WORK"

# shellcheck source=ci/bench/lib.sh
source "$REPO/ci/bench/lib.sh"
# wall seconds of one doctor run; exit 0 or 1 (a failed probe) both count, anything else is an error.
# ADDOPTS reaches the probes' pytest (PYTEST_ADDOPTS).
ADDOPTS=
doctor() {
    local t0 t1 rc=0
    t0=$(date +%s%N)
    as_user env PYTHONPATH="$REPO" PYTEST_ADDOPTS="$ADDOPTS" "$PY" -m contprobe doctor "$@" >"$WORK/last.txt" 2>&1 \
        || rc=$?
    t1=$(date +%s%N)
    [[ $rc -le 1 ]] || { cat "$WORK/last.txt" >&2; die "contprobe doctor $* exited $rc"; }
    elapsed "$t0" "$t1"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "N=$N, python $PY, user $(as_user id -un), load $LOAD_BEFORE"
if [[ -n ${XDIST:-} ]]; then
    as_user "$PY" -c 'import xdist' 2>/dev/null || die "XDIST=$XDIST needs pytest-xdist in $PY's environment"
fi
doctor >/dev/null   # warm-up: page cache, pyc files
full=(); sub=(); floor=(); xd=()
for i in $(seq 1 "$N"); do
    full+=("$(doctor)")
    cp "$WORK/last.txt" "$WORK/table.txt"
    sub+=("$(doctor -m "env or binds")")
    t0=$(date +%s%N); as_user "$PY" -c pass; t1=$(date +%s%N)
    floor+=("$(elapsed "$t0" "$t1")")
    if [[ -n ${XDIST:-} ]]; then
        ADDOPTS="-n $XDIST"; xd+=("$(doctor --out "$WORK/xdist" --force)"); ADDOPTS=
        grep -q "bringing up nodes" "$WORK/xdist/pytest.log" || die "pytest-xdist did not start its workers"
    fi
    log "round $i: doctor ${full[-1]} s, -m 'env or binds' ${sub[-1]} s${XDIST:+, -n $XDIST ${xd[-1]} s}"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
F=$(printf '%s\n' "${full[@]}" | median)
S=$(printf '%s\n' "${sub[@]}" | median)
P=$(printf '%s\n' "${floor[@]}" | median)

echo
echo "## contprobe doctor ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $LOAD_BEFORE -> $LOAD_AFTER)"
echo
echo "python $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])')), user $(as_user id -un), N=$N, median seconds"
echo
echo "| command | median [s] | all runs [s] |"
echo "|---|---|---|"
echo "| \`contprobe doctor\` | $F | ${full[*]} |"
echo "| \`contprobe doctor -m \"env or binds\"\` | $S | ${sub[*]} |"
if [[ -n ${XDIST:-} ]]; then
    echo "| \`contprobe doctor\` with PYTEST_ADDOPTS=\"-n $XDIST\" (pytest-xdist) | $(printf '%s\n' "${xd[@]}" | median) | ${xd[*]} |"
fi
echo "| \`python -c pass\` (interpreter start, for scale) | $P | ${floor[*]} |"
echo
echo "Table of the last full run (took ${full[-1]} s):"
echo
echo '```text'
cat "$WORK/table.txt"
echo '```'
