#!/usr/bin/env bash
# contprobe's mpi4py allreduce probe against an established benchmark (IMB-MPI1 Allreduce) on the
# same MPI library (Intel MPI from PyPI's impi-rt), same launcher, ranks and message sizes, on the host
# (no container). Target (README): the probe's time within 10% of IMB's t_avg at 1 MiB and above.
#
#   bash ci/bench/bench_allreduce.sh                        # as root the first time (installs impi-rt)
#   SIZES=1048576,16777216 REPEAT=5 bash ci/bench/bench_allreduce.sh
#
# Each repetition (interleaved, REPEAT times, medians reported):
#   IMB    mpiexec -n NP IMB-MPI1 Allreduce -npmin NP -msglog 3:<log2 max> -msglen <SIZES file>
#              -iter 1000,256 -time 2                       (t_avg over ranks, MPI_FLOAT sum)
#   probe  mpiexec -n NP <venv>/bin/python -m pytest -p no:cacheprovider contprobe/inimage/probes
#              -m "allreduce or mpi" -k "(allreduce and mpi4py and not gpu) or test_library"
#              --allreduce-sizes SIZES --results-dir DIR
#          metric.time_us of allreduce.mpi4py[<bytes>] from each rank's JUnit (the probe already takes
#          the max over ranks, so the ranks agree); mpi.library rides along only so that the suite
#          property mpi_library is recorded, which must name Intel MPI (else the run is refused).
#   loop   (LOOP=1, default) ci/bench/allreduce_loop.py: numpy buffers, IMB's iteration rule, t_avg over
#          ranks. Not a target; it tells the probe's timing loop apart from mpi4py's own cost.
# mpi4py (built against Debian's MPICH) is pointed at Intel MPI with the libmpich.so.12 shim that
# ci/bench/bench_allreduce_imb.sh sets up (see ci/provision/README-pyenv.md); I_MPI_FABRICS=shm.
#
# Environment: SIZES (bytes, comma-separated; default 8,1024,65536,1048576,16777216,67108864),
# NP (2), REPEAT (3), LOOP (1), CONTPROBE_SRC (checkout whose probe runs; default this one), CONTPROBE_VENV (/opt/contprobe/venv), CONTPROBE_IMB_VENV
# (/opt/contprobe/imb-venv), BENCH_OUT (raw outputs; default /tmp/contprobe-bench-allreduce).
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${CONTPROBE_SRC:-$(cd "$HERE/../.." && pwd)}   # the contprobe checkout whose probe is measured
VENV=${CONTPROBE_VENV:-/opt/contprobe/venv}
IMB_VENV=${CONTPROBE_IMB_VENV:-/opt/contprobe/imb-venv}
SIZES=${SIZES:-8,1024,65536,1048576,16777216,67108864}
NP=${NP:-2}
REPEAT=${REPEAT:-3}
LOOP=${LOOP:-1}
OUT=${BENCH_OUT:-/tmp/contprobe-bench-allreduce}

log() { printf '[bench-allreduce] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x $VENV/bin/python ]] || die "no venv at $VENV (run ci/provision/python-env.sh)"
PY=$VENV/bin/python
# impi-rt (IMB-MPI1, Intel's mpiexec and libmpi) and the libmpich.so.12 shim: the groundwork script's
# install step, idempotent (installs only when missing, which needs root)
SKIP_IMB=1 SKIP_MPI4PY=1 CONTPROBE_IMB_VENV=$IMB_VENV bash "$HERE/bench_allreduce_imb.sh"
[[ -L $IMB_VENV/mpich-shim/libmpich.so.12 ]] || die "no shim $IMB_VENV/mpich-shim/libmpich.so.12"
MPIEXEC=$IMB_VENV/bin/mpiexec
export I_MPI_FABRICS=${I_MPI_FABRICS:-shm}
IMB_LD="$IMB_VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PY_LD="$IMB_VENV/mpich-shim:$IMB_VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# sizes: whole float32 elements; IMB's -msglog upper end must cover the largest
read -r MAXLOG LENS < <("$PY" - "$SIZES" <<'EOF'
import sys
sizes = [int(s) for s in sys.argv[1].split(",") if s.strip()]
if not sizes or any(s < 4 or s % 4 for s in sizes):
    sys.exit("SIZES: byte counts, each a multiple of 4 and >= 4")
print(max(3, (max(sizes) - 1).bit_length()), ",".join(map(str, sorted(set(sizes)))))
EOF
)
LOGS=$("$PY" -c "import sys; s=[int(x) for x in sys.argv[1].split(',')]; print('%d:%d' % (min(s).bit_length()-1, max(s).bit_length()-1))" "$LENS")

rm -rf "$OUT"
mkdir -p "$OUT"
tr ',' '\n' <<<"$LENS" >"$OUT/msglen.txt"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "sizes $LENS, $NP ranks, $REPEAT repetitions, I_MPI_FABRICS=$I_MPI_FABRICS, load $LOAD_BEFORE"

for r in $(seq 1 "$REPEAT"); do
    log "repetition $r: IMB-MPI1"
    LD_LIBRARY_PATH="$IMB_LD" timeout 300 "$MPIEXEC" -n "$NP" "$IMB_VENV/bin/IMB-MPI1" Allreduce -npmin "$NP" \
        -msglog "3:$MAXLOG" -msglen "$OUT/msglen.txt" -iter 1000,256 -time 2 >"$OUT/imb-$r.txt" 2>&1 \
        || { cat "$OUT/imb-$r.txt" >&2; die "IMB-MPI1 failed"; }
    log "repetition $r: contprobe probe allreduce.mpi4py"
    mkdir -p "$OUT/probe-$r"
    # cwd: the results dir, so that no rootdir/ini file of the caller's cwd is picked up
    (cd "$OUT/probe-$r" && LD_LIBRARY_PATH="$PY_LD" PYTHONPATH="$REPO" timeout 600 "$MPIEXEC" -n "$NP" \
        "$PY" -m pytest -p no:cacheprovider "$REPO/contprobe/inimage/probes" -q --color=no \
        -m "allreduce or mpi" -k "(allreduce and mpi4py and not gpu) or test_library" \
        --allreduce-sizes "$LENS" --results-dir "$OUT/probe-$r") >"$OUT/probe-$r.txt" 2>&1 \
        || { cat "$OUT/probe-$r.txt" >&2; die "the probe run failed"; }
    if [[ $LOOP == 1 ]]; then
        log "repetition $r: ci/bench/allreduce_loop.py"
        LD_LIBRARY_PATH="$PY_LD" timeout 300 "$MPIEXEC" -n "$NP" "$PY" "$HERE/allreduce_loop.py" \
            --msglog "$LOGS" --json "$OUT/loop-$r.json" >"$OUT/loop-$r.txt" 2>&1 \
            || { cat "$OUT/loop-$r.txt" >&2; die "ci/bench/allreduce_loop.py failed"; }
    fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

CONTPROBE_SRC_DIR=$REPO "$PY" - "$OUT" "$REPEAT" "$LENS" "$NP" "$LOAD_BEFORE" "$LOAD_AFTER" "$LOOP" <<'EOF'
import glob, json, os, statistics, sys, time
import xml.etree.ElementTree as ET

out, repeat, lens, np_, load0, load1, loop = sys.argv[1:8]
repeat, np_, sizes = int(repeat), int(np_), [int(s) for s in lens.split(",")]

def imb(path):
    rows, on = {}, False
    for line in open(path):
        if line.startswith("# Benchmarking Allreduce"):
            on = True
        elif on and line.strip() and line.split()[0].isdigit():
            f = line.split()
            rows[int(f[0])] = {"reps": int(f[1]), "t_avg": float(f[4])}
        elif on and line.startswith("# All processes"):
            break
    return rows

def probe(d):
    files = sorted(glob.glob(os.path.join(d, "junit-r*.xml")))
    if len(files) != np_:
        sys.exit(f"{d}: {len(files)} rank files, expected {np_}")
    per_rank, libs = [], set()
    for f in files:
        root = ET.parse(f).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        props = {p.get("name"): p.get("value") for p in suite.find("properties")}
        libs.add(props.get("mpi_library", ""))
        if props.get("size") != str(np_):
            sys.exit(f"{f}: size {props.get('size')!r}, expected {np_}")
        got = {}
        for case in suite.iter("testcase"):
            cp = {p.get("name"): p.get("value") for p in case.iter("property")}
            pid = cp.get("probe", "")
            if case.find("failure") is not None or case.find("error") is not None or case.find("skipped") is not None:
                sys.exit(f"{f}: {pid} did not pass")
            if pid.startswith("allreduce.mpi4py["):
                got[int(pid[len("allreduce.mpi4py["):-1])] = {k[7:]: float(v) for k, v in cp.items() if k.startswith("metric.")}
        per_rank.append(got)
    if len(libs) != 1 or "Intel(R) MPI" not in next(iter(libs)):
        sys.exit(f"{d}: the probe did not run on Intel MPI: mpi_library = {sorted(libs)}")
    return per_rank[0], next(iter(libs))   # rank 0 (time_us is already the max over ranks)

imbs = [imb(os.path.join(out, f"imb-{r}.txt")) for r in range(1, repeat + 1)]
probes, lib = [], ""
for r in range(1, repeat + 1):
    p, lib = probe(os.path.join(out, f"probe-{r}"))
    probes.append(p)
loops = []
if loop == "1":
    for r in range(1, repeat + 1):
        loops.append({row["bytes"]: row for row in json.load(open(os.path.join(out, f"loop-{r}.json")))["results"]})

med = statistics.median
try:  # the probe's own iteration rule, from the checkout being measured
    sys.path.insert(0, os.environ["CONTPROBE_SRC_DIR"])
    from contprobe.inimage.probes.test_allreduce import iterations
except Exception:
    iterations = None
bus = 2.0 * (np_ - 1) / np_ if np_ > 1 else 1.0
print()
print(f"## Allreduce: contprobe probe vs IMB-MPI1 ({time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, "
      f"{os.cpu_count()} cores, load {load0} -> {load1})")
print()
print(f"{lib}, I_MPI_FABRICS={os.environ.get('I_MPI_FABRICS', '')}, {np_} ranks, float32 sum; "
      f"median of {repeat} runs; busbw = bytes/t * 2(n-1)/n, GB = 1e9 B")
print()
hdr = ["bytes", "IMB reps", "IMB t_avg [us]", "IMB busbw [GB/s]", "probe iters", "probe time_us", "probe busbw [GB/s]",
       "probe / IMB"]
if loops:
    hdr += ["loop t_avg [us]", "loop / IMB"]
hdr += ["target (<= 1.10 at >= 1 MiB)"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
summary = []
for s in sizes:
    it = med([i[s]["t_avg"] for i in imbs])
    reps = imbs[0][s]["reps"]
    pt = med([p[s]["time_us"] for p in probes])
    piters = str(iterations(s)) if iterations else "?"
    ratio = pt / it if it else float("nan")
    row = [str(s), str(reps), f"{it:.2f}", f"{s / it / 1e3 * bus:.3f}", str(piters), f"{pt:.2f}",
           f"{s / pt / 1e3 * bus:.3f}", f"{ratio:.2f}"]
    if loops:
        lt = med([l[s]["t_avg_us"] for l in loops])
        row += [f"{lt:.2f}", f"{lt / it:.2f}"]
    target = ("meets" if ratio <= 1.10 else "MISSES") if s >= 1 << 20 else "-"
    if s >= 1 << 20:
        summary.append((s, ratio))
    print("| " + " | ".join(row + [target]) + " |")
print()
print("per run (IMB t_avg / probe time_us, us):")
for s in sizes:
    print(f"  {s:>10d}: IMB " + " ".join(f"{i[s]['t_avg']:.2f}" for i in imbs)
          + " | probe " + " ".join(f"{p[s]['time_us']:.2f}" for p in probes)
          + (" | loop " + " ".join(f"{l[s]['t_avg_us']:.2f}" for l in loops) if loops else ""))
bad = [f"{s} B: {r:.2f}x" for s, r in summary if r > 1.10]
print()
print("verdict: probe within 10% of IMB at >= 1 MiB: " + ("yes" if not bad else "NO (" + ", ".join(bad) + ")"))
EOF
