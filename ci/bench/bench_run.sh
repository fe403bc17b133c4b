#!/usr/bin/env bash
# Wall time of `contprobe run IMAGE` against the floor of the same launch doing nothing plus the
# probes' own work. Target (README): contprobe run <= 1.5x (floor + probe work).
#
#   bash ci/bench/bench_run.sh                   # as root (containers run as $CONTPROBE_USER) or as that user
#   N=9 IMG=/var/tmp/contprobe-images/mpich.sif bash ci/bench/bench_run.sh
#   PROFILE=1 bash ci/bench/bench_run.sh         # also time contprobe's own phases (always done if ratio > 1.5)
#   RANKS=8 IMG=/var/tmp/contprobe-images/mpich.sif PROFILE=1 bash ci/bench/bench_run.sh   # 8 ranks, Hydra
#   bash ci/bench/bench_run_ranks.sh             # 1, 2, 4, 8 ranks: how contprobe's own cost grows
#
# Measured, interleaved, N times each (median reported):
#   floor        apptainer exec IMG python3 -c pass
#   floor+probes the bare launch of the probe suite: the exact command contprobe itself ran (taken from
#                <out>/launch.json "argv" of a warm-up run), re-run with the same staged harness and an
#                emptied results directory. This is the floor plus the probes' own work.
#   run          contprobe run IMG --no-rerun --out <fresh dir>   (python -m contprobe from the checkout)
#                with RANKS > 1: --ranks RANKS --launcher hydra (MPICH's mpiexec on this host) and UCX
#                settings the CI machine needs (tests/test_scale_e2e.py)
# ratio = run / (floor+probes); contprobe's own cost = run - (floor+probes).
#
# Environment: IMG (default $CONTPROBE_IMAGES/base.sif), N (5), CONTPROBE_USER (cpuser),
# PY (a Python with contprobe's deps usable by that user; default /opt/contprobe/venv/bin/python,
# else /tmp/devu/bin/python), WORK (scratch dir, default /tmp/contprobe-bench-run), PROFILE (0/1),
# RANKS (1), MARK (a pytest -m expression selecting the probes; default: all), RUN_EXTRA (more options),
# BARE_TIMEOUT (600 s: the bare launch is ended and the benchmark stops).
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGES=${CONTPROBE_IMAGES:-/var/tmp/contprobe-images}
IMG=${IMG:-$IMAGES/base.sif}
N=${N:-5}
RUSER=${CONTPROBE_USER:-cpuser}
WORK=${WORK:-/tmp/contprobe-bench-run}
PROFILE=${PROFILE:-0}
RANKS=${RANKS:-1}
RUN_ARGS=(--no-rerun)
[[ -n ${MARK:-} ]] && RUN_ARGS+=(-m "$MARK")     # a subset of the probes (less probe work to wait for)
read -r -a EXTRA <<<"${RUN_EXTRA:-}"               # more `contprobe run` options, split on spaces
RUN_ARGS+=("${EXTRA[@]}")
if [[ $RANKS -gt 1 ]]; then
    RUN_ARGS+=(--ranks "$RANKS" --launcher hydra --env UCX_POSIX_USE_PROC_LINK=n --env "UCX_TLS=^cma")
fi

log() { printf '[bench-run] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# run as the unprivileged user when we are root (root cannot run apptainer on the CI machine)
if [[ $(id -u) -eq 0 ]]; then
    id "$RUSER" >/dev/null 2>&1 || die "user $RUSER missing (ci/provision/apptainer.sh creates it)"
    as_user() { runuser -u "$RUSER" -- "$@"; }
else
    as_user() { "$@"; }
fi
if [[ -z ${PY:-} ]]; then
    for PY in /opt/contprobe/venv/bin/python /tmp/devu/bin/python; do
        as_user "$PY" -c 'import junitparser, tabulate, pytest' 2>/dev/null && break
        PY=
    done
fi
[[ -n $PY ]] || die "no Python with contprobe's deps usable by $(as_user id -un); set PY"
[[ -r $IMG ]] || die "image $IMG not readable (bash ci/provision/test-images.sh)"
as_user test -r "$REPO/contprobe/cli.py" || die "$REPO not readable by $(as_user id -un)"
command -v apptainer >/dev/null || die "apptainer not on PATH"

rm -rf "$WORK"
mkdir -p "$WORK"
[[ $(id -u) -eq 0 ]] && chown "$RUSER" "$WORK"
cd "$WORK"

# wall seconds of one command (output discarded, exit status checked)
wall() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || { log "failed: $*"; "$@" >&2 || true; die "command failed"; }
    t1=$(date +%s%N)
    elapsed "$t0" "$t1"
}
# shellcheck source=ci/bench/lib.sh
source "$REPO/ci/bench/lib.sh"

# exit 1 is a failed probe (the image or the machine, e.g. a stale ~/.local package): timed all the same
tolerate_fail() { local rc=0; "$@" || rc=$?; [[ $rc -le 1 ]]; }
run_contprobe() { tolerate_fail as_user env PYTHONPATH="$REPO" "$PY" -m contprobe run "$IMG" "${RUN_ARGS[@]}" --out "$1"; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "image $IMG, ranks $RANKS, N=$N, user $(as_user id -un), python $PY, load $LOAD_BEFORE"

# warm-up (page cache, harness staging) and the exact probe-suite command contprobe launches
run_contprobe "$WORK/warm" >/dev/null || die "contprobe run failed (see $WORK/warm/launch.log)"
mapfile -t PROBE_ARGV < <("$PY" -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["argv"]))' \
    "$WORK/warm/launch.json")
# the variables the launch adds to its environment: the NAME=VALUE words in front of argv in "command"
mapfile -t PROBE_ENV < <("$PY" -c 'import json,shlex,sys; d=json.load(open(sys.argv[1]))
w=shlex.split(d["command"]); sys.stdout.write("".join(x + "\n" for x in w[:len(w)-len(d["argv"])]))' \
    "$WORK/warm/launch.json")
RANKS_DIR="$WORK/warm/ranks"
# The bare launch has no grace period: one whose squashfuse_ll outlives its container (the
# fuse-driver-lingers gotcha: a rank killed mid-exit) would wait forever.
bare_probes() {
    local rc=0
    rm -rf "${RANKS_DIR:?}"/*
    as_user timeout -k 5 "${BARE_TIMEOUT:-600}" env "${PROBE_ENV[@]}" "${PROBE_ARGV[@]}" || rc=$?
    [[ $rc -ne 124 && $rc -ne 137 ]] || die "the bare launch did not exit in ${BARE_TIMEOUT:-600} s (fuse-driver-lingers?)"
    [[ $rc -le 1 ]]
}
as_user apptainer exec "$IMG" python3 -c pass 2>/dev/null || die "apptainer exec $IMG failed as $RUSER"

floor=(); probes=(); runs=()
for i in $(seq 1 "$N"); do
    floor+=("$(wall as_user apptainer exec "$IMG" python3 -c pass)")
    probes+=("$(wall bare_probes)")
    rm -rf "$WORK/run"
    runs+=("$(wall run_contprobe "$WORK/run")")
    log "round $i: floor ${floor[-1]} s, floor+probes ${probes[-1]} s, run ${runs[-1]} s"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
F=$(printf '%s\n' "${floor[@]}" | median)
P=$(printf '%s\n' "${probes[@]}" | median)
R=$(printf '%s\n' "${runs[@]}" | median)
RATIO=$(awk -v r="$R" -v p="$P" 'BEGIN{printf "%.2f", r/p}')
VERDICT=$(awk -v x="$RATIO" 'BEGIN{print (x <= 1.5) ? "meets" : "MISSES"}')

profile() {
    # contprobe's own phases, timed by wrapping its functions in real `contprobe run`s (a fresh
    # process each, PROFILE_K times, default 5; medians per phase). Start times are seconds since the
    # driver's first line, so the interpreter's own start (`python -c pass`) comes on top.
    local k
    : >"$WORK/profile.jsonl"
    for k in $(seq 1 "${PROFILE_K:-5}"); do
        rm -rf "$WORK/prof"
        as_user env PYTHONPATH="$REPO" "$PY" - "$IMG" "$WORK/prof" "${RUN_ARGS[@]}" >>"$WORK/profile.jsonl" <<'EOF'
import contextlib, io, json, sys, time
T0 = time.monotonic()
spans = []
def wrap(mod, name, label):
    fn = getattr(mod, name)
    def w(*a, **k):
        t = time.monotonic()
        try:
            return fn(*a, **k)
        finally:
            spans.append((label, t - T0, time.monotonic() - T0))
    setattr(mod, name, w)
import contprobe.cli as cli
import contprobe.commands.run as cr
from contprobe import harness, image, launchers, runtimes
from contprobe.reports import pipeline
spans.append(("imports (contprobe.cli, commands.run)", 0.0, time.monotonic() - T0))
wrap(cr, "run_all", "host checks (run_all)")
wrap(runtimes, "probe", "`apptainer --version` (runtimes.probe), all calls")
wrap(launchers, "detect", "launcher detection (launchers.detect)")
wrap(cr, "make_plan", "planning (make_plan: runtime, launcher, image)")
wrap(image.Image, "digest", "SIF sha256 digest (thread, overlaps stage/launch)")
wrap(harness, "stage", "harness.stage (once per launch, not per rank)")
wrap(cr, "execute", "launch: the launcher starting every rank's container")
wrap(cr, "lost_ranks", "lost_ranks (one listing of ranks/)")
wrap(cr, "write_record", "write launch.json")
wrap(pipeline, "build", "collect + merge (read every rank file once)")
wrap(pipeline, "render", "render (table, outputs)")
tm = time.monotonic()
with contextlib.redirect_stdout(io.StringIO()):
    rc = cli.main(["run", sys.argv[1], *sys.argv[3:], "--out", sys.argv[2]])
spans.append(("cli.main, whole", tm - T0, time.monotonic() - T0))
print(json.dumps({"rc": rc, "spans": spans}))
EOF
    done
    "$PY" - "$WORK/profile.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
order, start, dur, calls = [], {}, {}, {}
for r in runs:
    seen = {}
    for label, s, e in r["spans"]:
        if label not in order:
            order.append(label)
        row = seen.setdefault(label, [0, s, 0.0])
        row[0] += 1
        row[2] += e - s
    for label, (n, s, d) in seen.items():
        start.setdefault(label, []).append(s)
        dur.setdefault(label, []).append(d)
        calls[label] = n
order.sort(key=lambda l: statistics.median(start[l]))
print("| phase | calls | starts at [s] | takes [s] (median of %d runs) |" % len(runs))
print("|---|---|---|---|")
for l in order:
    print("| %s | %d | %.3f | %.3f |" % (l, calls[l], statistics.median(start[l]), statistics.median(dur[l])))
EOF
    echo
    echo "Interpreter start and imports, each a fresh process (median of 5):"
    echo
    local t_pass t_pytest t_imp
    t_pass=$(for _ in 1 2 3 4 5; do wall as_user "$PY" -c pass; done | median)
    t_pytest=$(for _ in 1 2 3 4 5; do wall as_user "$PY" -c 'import pytest'; done | median)
    t_imp=$(for _ in 1 2 3 4 5; do wall as_user env PYTHONPATH="$REPO" "$PY" -c 'import contprobe.cli, contprobe.commands.run'; done | median)
    echo "| command | median [s] |"
    echo "|---|---|"
    echo "| \`python -c pass\` | $t_pass |"
    echo "| \`python -c 'import pytest'\` | $t_pytest |"
    echo "| \`python -c 'import contprobe.cli, contprobe.commands.run'\` | $t_imp |"
    echo
    echo "Slowest imports of \`python -X importtime -m contprobe --help\` (cumulative us, top 10):"
    echo
    as_user env PYTHONPATH="$REPO" "$PY" -X importtime -m contprobe --help 2>&1 >/dev/null \
        | awk -F'|' '/^import time:/ && $2+0 > 0 {gsub(/^ +| +$/, "", $3); print $2+0, $3}' \
        | sort -rn | head -10 | awk '{printf "    %8d  %s\n", $1, $2}'
}

echo
echo "## contprobe run vs the bare launch ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $LOAD_BEFORE -> $LOAD_AFTER)"
echo
echo "image: $IMG ($(du -m "$IMG" | cut -f1) MB), ranks $RANKS, user $(as_user id -un), N=$N, median seconds"
echo
echo "| what | median [s] | all runs [s] |"
echo "|---|---|---|"
echo "| floor: \`apptainer exec IMG python3 -c pass\` | $F | ${floor[*]} |"
echo "| floor + probe work: bare launch of the probe suite (launch.json argv) | $P | ${probes[*]} |"
echo "| probe work alone (difference) | $(awk -v a="$P" -v b="$F" 'BEGIN{printf "%.3f", a-b}') | |"
echo "| \`contprobe run IMG ${RUN_ARGS[*]}\` | $R | ${runs[*]} |"
echo "| contprobe's own cost (run - bare launch) | $(awk -v a="$R" -v b="$P" 'BEGIN{printf "%.3f", a-b}') | |"
echo
echo "ratio run / (floor + probe work) = $RATIO (target <= 1.5: $VERDICT)"
if [[ $PROFILE == 1 || $VERDICT == MISSES ]]; then
    echo
    echo "## where contprobe's own time goes (${PROFILE_K:-5} instrumented runs; seconds since the driver's first line)"
    echo
    profile
fi
