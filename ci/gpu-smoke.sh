#!/usr/bin/env bash
# GPU smoke test: on a machine with NVIDIA GPUs and a Python that has torch, install contprobe, run
# `contprobe doctor --expect-gpus N --json`, and save the real outputs for use as test fixtures.
#
#   ci/gpu-smoke.sh [OUTDIR]        OUTDIR defaults to $OUT, then ./gpu-smoke-out
#   PYTHON=/path/to/python  (default: python3)   EXPECT_GPUS=N  (default: the count nvidia-smi reports)
#
# Saved (each command's stdout, plus .rc with its exit code and .err with stderr where useful):
#   nvidia-smi.txt             plain `nvidia-smi` (the banner: driver and CUDA version)
#   nvidia-smi-q.txt           `nvidia-smi -q`
#   query-gpu=index,name,uuid.csv   the exact query the gpu probes make (with header, as the fixtures keep it)
#   nvidia-smi-L.txt, nvcc-version.txt, torch.txt, doctor.json, doctor.xml, doctor.md, doctor.out
#   q.txt                      `nvidia-smi -q` again under the name the fixtures use (the health probes
#                              parse it: row remapper, PCIe link, clock event reasons, persistence)
#   nvlink-s.txt               `nvidia-smi nvlink -s` (gpu.nvlink)
#   query-gpu=uuid,mig.mode.current,mig.mode.pending.csv   (gpu.mig)
#   q-busy.txt                 `nvidia-smi -q` while torch keeps every GPU busy: the
#                              PCIe link as the probe judges it (an idle link downshifts)
# The query CSV and nvidia-smi.txt drop straight into tests/fixtures/nvidia-smi/<name>/ (as banner.txt);
# write a PROVENANCE naming the machine and date.
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
OUTDIR=${1:-${OUT:-$PWD/gpu-smoke-out}}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
log() { printf '[gpu-smoke] %s\n' "$*" >&2; }

capture() {  # capture NAME CMD...: stdout to NAME, stderr to NAME.err, exit code to NAME.rc
  local name=$1; shift
  "$@" >"$OUTDIR/$name" 2>"$OUTDIR/$name.err"
  echo $? >"$OUTDIR/$name.rc"
  [ -s "$OUTDIR/$name.err" ] || rm -f "$OUTDIR/$name.err"
}

command -v nvidia-smi >/dev/null || { log "nvidia-smi not on PATH: not a GPU machine"; exit 2; }
QUERY=$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from contprobe.inimage.context import NVSMI_QUERY; print(NVSMI_QUERY)' "$HERE" 2>/dev/null || echo index,name,uuid)

capture nvidia-smi.txt nvidia-smi
capture nvidia-smi-q.txt nvidia-smi -q
capture nvidia-smi-L.txt nvidia-smi -L
capture "query-gpu=$QUERY.csv" nvidia-smi "--query-gpu=$QUERY" --format=csv
cp "$OUTDIR/nvidia-smi-q.txt" "$OUTDIR/q.txt"
capture nvlink-s.txt nvidia-smi nvlink -s
MIGQ=$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from contprobe.inimage.gpuhealth import MIG_QUERY; print(MIG_QUERY)' "$HERE" 2>/dev/null || echo uuid,mig.mode.current,mig.mode.pending)
capture "query-gpu=$MIGQ.csv" nvidia-smi "--query-gpu=$MIGQ" --format=csv
# A busy link: a matmul loop on every GPU for ~20 s, read in the middle of it.
"$PY" - >"$OUTDIR/load.out" 2>&1 <<'PYEOF' &
import time, torch
xs = [torch.randn(4096, 4096, device=f"cuda:{i}") for i in range(torch.cuda.device_count())]
end = time.time() + 20
while time.time() < end:
    for x in xs:
        x @ x
        x.cpu()[:1]            # host traffic keeps the PCIe link up as well
PYEOF
LOAD=$!
sleep 10
capture q-busy.txt nvidia-smi -q
wait $LOAD
if command -v nvcc >/dev/null; then capture nvcc-version.txt nvcc --version; else log "no nvcc on PATH"; fi
capture torch.txt "$PY" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count())'

N=${EXPECT_GPUS:-$(grep -c '^GPU [0-9]' "$OUTDIR/nvidia-smi-L.txt" || true)}
log "expecting $N GPU(s)"

log "installing contprobe into $PY"
"$PY" -m pip install -q -e "$HERE" >"$OUTDIR/pip.out" 2>&1 || "$PY" -m pip install -q --user -e "$HERE" >>"$OUTDIR/pip.out" 2>&1 \
  || { log "pip install failed, see $OUTDIR/pip.out"; exit 2; }

"$PY" -m contprobe doctor --expect-gpus "$N" --json "$OUTDIR/doctor.json" --junit "$OUTDIR/doctor.xml" \
  --markdown "$OUTDIR/doctor.md" >"$OUTDIR/doctor.out" 2>&1
RC=$?
echo $RC >"$OUTDIR/doctor.rc"
cat "$OUTDIR/doctor.out" >&2
log "doctor exited $RC; outputs in $OUTDIR"
exit $RC
