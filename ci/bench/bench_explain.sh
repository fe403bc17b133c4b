#!/usr/bin/env bash
# `contprobe explain` on a generated job log (default 1 GiB) against `grep -n -E -i -f` with the same
# patterns (the catalog's, translated to POSIX ERE where they translate), on the same file, both writing
# their output to a file: wall time (median of N runs, interleaved) and peak RSS (GNU time %M).
# explain itself selects candidate lines with grep -E (contprobe/inimage/scan.py grep_expressions) and
# runs the Python scanner on those; without grep it scans in Python (about 25 s per 100 MB here).
#
#   bash ci/bench/bench_explain.sh                   # SIZE=1073741824 N=3
#   SIZE=100000000 N=5 bash ci/bench/bench_explain.sh
#
# The log: training progress, NCCL INFO and Apptainer INFO lines, with a failure every 200,000 lines.
# Environment: SIZE (bytes), N (runs), PY (Python with contprobe's deps), WORK (scratch dir).
set -euo pipefail
umask 022
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=ci/bench/lib.sh
source "$REPO/ci/bench/lib.sh"
SIZE=${SIZE:-1073741824}
N=${N:-3}
WORK=${WORK:-/tmp/contprobe-bench-explain}
PY=${PY:-/opt/contprobe/venv/bin/python}
[[ -x $PY ]] || PY=python3
[[ -x /usr/bin/time ]] || { echo "bench-explain: needs GNU time (/usr/bin/time)" >&2; exit 1; }
mkdir -p "$WORK"
LOG=$WORK/job.log
PATS=$WORK/patterns.ere

PYTHONPATH=$REPO "$PY" - "$SIZE" "$LOG" "$PATS" <<'PYEOF'
import os, random, re, sys
from contprobe.inimage import catalog, scan
size, log, pats = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# The catalog's patterns as ERE (scan.ere; the two with lookarounds or escapes in brackets as their
# literals) plus the error words explain also shows: the expressions explain hands to grep.
ere = scan.grep_expressions(catalog.rules(None))
with open(pats, "w") as fh:
    fh.write("\n".join(ere) + "\n")
print(f"patterns: {len(ere)} ERE for grep ({len(catalog.rules(None).patterns)} catalog patterns)", file=sys.stderr)
if os.path.exists(log) and os.path.getsize(log) >= size:
    sys.exit(0)
random.seed(1)
lines = ["x3004c0s1b0n0:12345:12400 [0] NCCL INFO Channel 00/24 :    0   1   2   3",
         "x3004c0s1b0n0:12345:12400 [0] NCCL INFO NET/Socket : Using [0]hsn0:10.201.0.1<0>",
         "INFO:    Converting SIF file to temporary sandbox...",
         "epoch 3 step {n} loss 0.{n} lr 0.0003 grad_norm 1.2 tokens/s 51234",
         "[rank{r}]: iteration {n}/100000 | consumed samples: {n} | elapsed time per iteration (ms): 412.3",
         "2026-11-29 08:20:30,123 - trainer - throughput 1234.5 samples/s, memory 40.1 GiB",
         "Validation: accuracy 0.9{n} top5 0.99"]
fails = ["RuntimeError: NCCL error: unhandled system error",
         "include/shm.h:28 NCCL WARN Call to posix_fallocate failed : No space left on device",
         "FATAL:   container creation failed: mount /proc/self/fd/3->/var/apptainer/mnt/session/rootfs error: "
         "while mounting image /proc/self/fd/3: failed to find loop device: could not attach image file to "
         "loop device: no loop devices available"]
with open(log, "w") as fh:
    n = written = 0
    buf = []
    while written < size:
        n += 1
        line = (random.choice(fails) if n % 200000 == 0 else random.choice(lines).format(n=n, r=n % 4)) + "\n"
        buf.append(line)
        written += len(line)
        if len(buf) >= 20000:
            fh.write("".join(buf))
            buf = []
    fh.write("".join(buf))
PYEOF
echo "log: $LOG ($(stat -c %s "$LOG") bytes, $(wc -l < "$LOG") lines); load: $(cut -d' ' -f1-3 /proc/loadavg)"

# cmd... -> "seconds KB" on stdout (GNU time writes a status line first when the exit is not 0). Output
# goes to a file: GNU grep writing to /dev/null stops at the first match, which would time nothing.
run() {
    /usr/bin/time -f '%e %M %U %S' -o "$WORK/time.txt" "$@" >"$WORK/out.txt" 2>/dev/null || true
    tail -1 "$WORK/time.txt"
}
declare -a ET EM EC GT GM GC
for ((i = 0; i < N; i++)); do
    read -r s k u y < <(run env PYTHONPATH="$REPO" "$PY" -m contprobe explain "$LOG" --json "$WORK/explain.json")
    ET+=("$s"); EM+=("$k"); EC+=("$(awk -v a="$u" -v b="$y" 'BEGIN{print a+b}')")
    read -r s k u y < <(run env LC_ALL=C grep -a -n -i -E -f "$PATS" "$LOG")
    GT+=("$s"); GM+=("$k"); GC+=("$(awk -v a="$u" -v b="$y" 'BEGIN{print a+b}')")
done
et=$(printf '%s\n' "${ET[@]}" | median); gt=$(printf '%s\n' "${GT[@]}" | median)
ec=$(printf '%s\n' "${EC[@]}" | median); gc=$(printf '%s\n' "${GC[@]}" | median)
em=$(printf '%s\n' "${EM[@]}" | sort -n | tail -1); gm=$(printf '%s\n' "${GM[@]}" | sort -n | tail -1)
echo "grep matched $(wc -l < "$WORK/out.txt") lines; load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "explain:        median ${et} s wall, ${ec} s CPU  peak RSS ${em} KB   (wall: ${ET[*]})"
echo "grep -E -i -f:  median ${gt} s wall, ${gc} s CPU  peak RSS ${gm} KB   (wall: ${GT[*]})"
awk -v a="$et" -v b="$gt" -v c="$ec" -v d="$gc" 'BEGIN{printf "explain / grep: %.2fx wall, %.2fx CPU\n", a/b, c/d}'
PYTHONPATH=$REPO "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("explain found:", [x["gotcha"] for f in d["files"] for x in f["findings"]])' "$WORK/explain.json"
