#!/usr/bin/env bash
# Validate every image in a directory, several at once, then write one dated report directory.
#
#   ci/nightly.sh [IMAGE_DIR]          (ci/pbs/nightly.pbs calls it inside a PBS job)
#
# Environment (all optional):
#   IMAGE_DIR        images to validate (*.sif)            required (argument or variable)
#   SITE             site profile (polaris, generic, ...)   default: detected by contprobe
#   NODES            nodes to use                           default: hosts in $PBS_NODEFILE, else 1
#   RANKS_PER_NODE   ranks per node for each image          default: 4 on polaris, else 1
#   NODES_PER_IMAGE  nodes one image's launch gets          default: all NODES (one image at a time)
#   JOBS             images validated concurrently          default: NODES / NODES_PER_IMAGE
#   OUT_ROOT         where dated directories go             default: $PBS_O_WORKDIR/contprobe-nightly, else ./contprobe-nightly
#   CONTPROBE        the contprobe command                  default: contprobe (python3 -m contprobe if absent)
#   CONTPROBE_CMD    validate (the publish gate) or run     default: validate
#   RUN_ARGS         extra arguments for every launch (e.g. "--timeout 900")
#   IMAGE_TIMEOUT    seconds one image may take             default: 1800
#
# Output: $OUT_ROOT/<YYYY-MM-DD>[.N]/results/<image>/{launch.json,ranks/...} and
#         $OUT_ROOT/<YYYY-MM-DD>[.N]/report/{index.html,report.json,report.md,junit.xml}
# Exit:   contprobe report's status: 0 all passed, 1 failures or lost ranks, 3 incomplete results;
#         2 bad setup (no images, bad directory).
set -uo pipefail

log() { printf '[nightly %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

IMAGE_DIR=${1:-${IMAGE_DIR:-}}
if [ -n "${CONTPROBE:-}" ]; then
    read -r -a CP <<<"$CONTPROBE"
elif command -v contprobe >/dev/null 2>&1; then
    CP=(contprobe)
else
    CP=(python3 -m contprobe)
fi
SUB=${CONTPROBE_CMD:-validate}
case $SUB in validate|run) ;; *) die "CONTPROBE_CMD must be validate or run, not '$SUB'";; esac
read -r -a EXTRA <<<"${RUN_ARGS:-}"
SITE_ARGS=()
[ -n "${SITE:-}" ] && SITE_ARGS=(--site "$SITE")

[ -n "$IMAGE_DIR" ] || die "give IMAGE_DIR (argument or variable); on Polaris the published images are in /soft/containers"
[ -d "$IMAGE_DIR" ] || die "IMAGE_DIR $IMAGE_DIR is not a directory"
mapfile -t IMAGES < <(find "$IMAGE_DIR" -maxdepth 1 \( -name '*.sif' -o -name '*.simg' \) \( -type f -o -type l \) | sort)
[ "${#IMAGES[@]}" -gt 0 ] || die "no *.sif images in $IMAGE_DIR"

# ---- the allocation: nodes, and how many images can run side by side --------------------------
HOSTS=()
if [ -n "${PBS_NODEFILE:-}" ] && [ -r "$PBS_NODEFILE" ]; then
    mapfile -t HOSTS < <(awk '!seen[$1]++ {print $1}' "$PBS_NODEFILE")
fi
NODES=${NODES:-${#HOSTS[@]}}
[ "$NODES" -ge 1 ] 2>/dev/null || NODES=1
if [ "${#HOSTS[@]}" -gt 0 ] && [ "$NODES" -gt "${#HOSTS[@]}" ]; then
    die "NODES=$NODES but the allocation has ${#HOSTS[@]} host(s)"
fi
if [ -z "${RANKS_PER_NODE:-}" ]; then
    case ${SITE:-} in polaris) RANKS_PER_NODE=4;; *) RANKS_PER_NODE=1;; esac
fi
NODES_PER_IMAGE=${NODES_PER_IMAGE:-$NODES}
[ "$NODES_PER_IMAGE" -ge 1 ] && [ "$NODES_PER_IMAGE" -le "$NODES" ] 2>/dev/null \
    || die "NODES_PER_IMAGE must be between 1 and NODES=$NODES"
JOBS=${JOBS:-$(( NODES / NODES_PER_IMAGE ))}
[ "$JOBS" -ge 1 ] 2>/dev/null || die "JOBS must be >= 1"
[ "$JOBS" -gt "${#IMAGES[@]}" ] && JOBS=${#IMAGES[@]}
RANKS=$(( NODES_PER_IMAGE * RANKS_PER_NODE ))
IMAGE_TIMEOUT=${IMAGE_TIMEOUT:-1800}

OUT_ROOT=${OUT_ROOT:-${PBS_O_WORKDIR:-.}/contprobe-nightly}
NIGHT=$(date -u +%Y-%m-%d)
OUT=$OUT_ROOT/$NIGHT
n=1
while [ -e "$OUT" ]; do n=$((n + 1)); OUT=$OUT_ROOT/$NIGHT.$n; done
mkdir -p "$OUT/results" "$OUT/report" "$OUT/logs" "$OUT/nodes" || die "cannot create $OUT"
log "${#IMAGES[@]} image(s) from $IMAGE_DIR; $NODES node(s), $RANKS rank(s) per image, $JOBS at a time; out $OUT"

# One nodefile per slot: concurrent images never share a node (GPU and NIC contention would show
# up as false performance regressions).
slot_nodefile() {
    local slot=$1 f=$OUT/nodes/slot$1
    if [ "${#HOSTS[@]}" -gt 0 ]; then
        printf '%s\n' "${HOSTS[@]:$(( slot * NODES_PER_IMAGE )):$NODES_PER_IMAGE}" >"$f"
        echo "$f"
    fi
}

validate_one() {   # slot image
    local slot=$1 img=$2 name nodefile args
    name=$(basename "$img"); name=${name%.*}
    nodefile=$(slot_nodefile "$slot")
    args=("$SUB" "$img" "${SITE_ARGS[@]}" --ranks "$RANKS" --out "$OUT/results/$name"
          --json "$OUT/results/$name.json" "${EXTRA[@]}")
    [ "$RANKS" -gt 1 ] && args+=(--ppn "$RANKS_PER_NODE")
    [ -n "$nodefile" ] && args+=(--hostfile "$nodefile")
    # timeout: a hung launch must not eat the whole window; the report calls its ranks lost.
    timeout --kill-after=60 "$IMAGE_TIMEOUT" "${CP[@]}" "${args[@]}" >"$OUT/logs/$name.log" 2>&1
}

# ---- a bounded pool with a progress line ---------------------------------------------------------
declare -A PID_IMG=() PID_SLOT=()
FREE=()
for ((s = 0; s < JOBS; s++)); do FREE+=("$s"); done
done_n=0; failed_n=0; next=0; total=${#IMAGES[@]}; t0=$SECONDS; FAILED=()

progress() {
    local running=${#PID_IMG[@]} left="?" elapsed=$(( SECONDS - t0 ))
    if [ "$done_n" -gt 0 ]; then
        # Average wall time per image, spread over the slots still to be filled.
        left=$(( elapsed * (total - done_n) / done_n ))
        left="~$(( left / 60 ))m$(( left % 60 ))s"
    fi
    log "progress: $done_n/$total done, $running running, $failed_n failed, ${elapsed}s elapsed, $left left"
}

while [ "$next" -lt "$total" ] || [ "${#PID_IMG[@]}" -gt 0 ]; do
    while [ "$next" -lt "$total" ] && [ "${#FREE[@]}" -gt 0 ]; do
        slot=${FREE[0]}; FREE=("${FREE[@]:1}")
        img=${IMAGES[$next]}; next=$((next + 1))
        validate_one "$slot" "$img" &
        PID_IMG[$!]=$img; PID_SLOT[$!]=$slot
        log "start $(basename "$img") (slot $slot)"
    done
    # Poll rather than `wait -n -p` (bash 5.1): login and compute nodes may have bash 4.
    finished=""
    while [ -z "$finished" ]; do
        for pid in "${!PID_IMG[@]}"; do
            if ! kill -0 "$pid" 2>/dev/null; then finished=$pid; break; fi
        done
        [ -n "$finished" ] || sleep 1
    done
    wait "$finished"
    rc=$?
    img=${PID_IMG[$finished]}
    FREE+=("${PID_SLOT[$finished]}")
    unset "PID_IMG[$finished]" "PID_SLOT[$finished]"
    done_n=$((done_n + 1))
    case $rc in
        0) log "done $(basename "$img"): passed";;
        1) log "done $(basename "$img"): FAILED"; failed_n=$((failed_n + 1)); FAILED+=("$img");;
        *) log "done $(basename "$img"): exit $rc (see $OUT/logs)"; failed_n=$((failed_n + 1)); FAILED+=("$img");;
    esac
    progress
done

# ---- one report for the night, compared with the earlier nights ---------------------------------
HIST=()
prev=$(find "$OUT_ROOT" -mindepth 3 -maxdepth 3 -path '*/report/report.json' ! -path "$OUT/*" 2>/dev/null | sort | tail -n 1)
[ -n "$prev" ] && HIST+=(--baseline "$prev" --history "$OUT_ROOT")
"${CP[@]}" report "$OUT/results" "${SITE_ARGS[@]}" "${HIST[@]}" --out "$OUT/report" \
    --title "contprobe nightly $NIGHT" >"$OUT/report/summary.txt" 2>"$OUT/logs/report.err"
rc=$?
cat "$OUT/report/summary.txt"
[ -s "$OUT/logs/report.err" ] && cat "$OUT/logs/report.err" >&2
ln -sfn "$(basename "$OUT")" "$OUT_ROOT/latest" 2>/dev/null || true
# An image whose launch broke before writing anything (exit 2: bad image, 124: timeout) is not in the
# report's results: the night is then incomplete, whatever the report says.
for img in "${FAILED[@]}"; do
    name=$(basename "$img"); name=${name%.*}
    if [ ! -d "$OUT/results/$name" ]; then
        log "INCOMPLETE: $(basename "$img") left no results (see $OUT/logs/$name.log)"
        [ "$rc" -le 1 ] && rc=3
    fi
done
log "report: $OUT/report/index.html (exit $rc; $failed_n of $total image(s) failed)"
exit "$rc"
