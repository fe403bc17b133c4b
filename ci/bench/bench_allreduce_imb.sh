#!/usr/bin/env bash
# Allreduce benchmark groundwork: Intel MPI Benchmarks (IMB-MPI1 Allreduce) next to an mpi4py
# timing loop (ci/bench/allreduce_loop.py), both on the same Intel MPI library, same launcher, same ranks.
#
#   bash ci/bench/bench_allreduce_imb.sh            # as root (installs); figures in ci/provision/README-pyenv.md
#
# Debian 12 packages neither OSU nor IMB. PyPI's impi-rt wheel ships IMB-MPI1 with Intel MPI's own
# mpiexec; it is installed with --no-deps into its own venv (its libfabric>=2.6 dependency is not
# installable here; Debian's libfabric1 serves) and run with LD_LIBRARY_PATH=<venv>/lib and
# I_MPI_FABRICS=shm.
# The mpi4py loop uses the contprobe venv's mpi4py (ci/provision/python-env.sh), which is built
# against Debian's MPICH and so needs libmpich.so.12; Intel MPI ships the same ABI as libmpi.so.12
# only. A shim directory with libmpich.so.12 -> Intel's libmpi.so.12 first on LD_LIBRARY_PATH makes
# it load Intel MPI (without it, it silently runs on Debian's MPICH under Intel's mpiexec).
#
# Environment:
#   CONTPROBE_VENV      venv with mpi4py + numpy   (default /opt/contprobe/venv)
#   CONTPROBE_IMB_VENV  venv for impi-rt           (default /opt/contprobe/imb-venv)
#   IMPI_RT_VERSION     impi-rt version            (default 2021.19.0)
#   NP                  ranks                      (default 2)
#   MSGLOG              log2 min:max bytes         (default 3:26, i.e. 8 B .. 64 MiB)
#   BENCH_OUT           directory for raw outputs  (default: none)
#   SKIP_IMB / SKIP_MPI4PY = 1 to skip one side
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${CONTPROBE_VENV:-/opt/contprobe/venv}
IMB_VENV=${CONTPROBE_IMB_VENV:-/opt/contprobe/imb-venv}
IMPI_RT_VERSION=${IMPI_RT_VERSION:-2021.19.0}
NP=${NP:-2}
MSGLOG=${MSGLOG:-3:26}
# IMB: at most 1000 repetitions and 256 MiB moved per size, and at most 2 s per size
IMB_ITER=${IMB_ITER:-1000,256}
IMB_TIME=${IMB_TIME:-2}

log() { printf '[bench-allreduce] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
install_imb() {
    if [[ -x $IMB_VENV/bin/IMB-MPI1 && -x $IMB_VENV/bin/mpiexec && -e $IMB_VENV/lib/libmpi.so.12 ]] \
        && dpkg-query -W -f='${Status}' libfabric1 2>/dev/null | grep -q "install ok installed"; then
        log "impi-rt: present in $IMB_VENV"
    else
        [[ $(id -u) -eq 0 ]] || die "impi-rt missing in $IMB_VENV; run once as root to install it"
        if ! dpkg-query -W -f='${Status}' libfabric1 2>/dev/null | grep -q "install ok installed"; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libfabric1 >/dev/null
        fi
        local py=/usr/bin/python3
        [[ -x $py ]] || py=${PYTHON:-python3}
        [[ -x $IMB_VENV/bin/python ]] || "$py" -m venv "$IMB_VENV"
        log "impi-rt: installing ${IMPI_RT_VERSION} (--no-deps) into $IMB_VENV"
        "$IMB_VENV/bin/python" -m pip install -q --no-deps "impi-rt==${IMPI_RT_VERSION}"
        chmod -R a+rX "$IMB_VENV"
    fi
    # libmpich.so.12 -> Intel MPI's libmpi.so.12, for the MPICH-built mpi4py
    mkdir -p "$IMB_VENV/mpich-shim"
    [[ -L $IMB_VENV/mpich-shim/libmpich.so.12 ]] \
        || ln -sfn "$IMB_VENV/lib/libmpi.so.12" "$IMB_VENV/mpich-shim/libmpich.so.12"
}

install_imb
export I_MPI_FABRICS=${I_MPI_FABRICS:-shm}
IMPI_LIB="$IMB_VENV/lib"
MPIEXEC="$IMB_VENV/bin/mpiexec"
[[ -n ${BENCH_OUT:-} ]] && mkdir -p "$BENCH_OUT"
TEE_IMB=/dev/null; TEE_PY=/dev/null
[[ -n ${BENCH_OUT:-} ]] && { TEE_IMB=$BENCH_OUT/imb_allreduce.txt; TEE_PY=$BENCH_OUT/mpi4py_allreduce.txt; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# ---------------------------------------------------------------------------------------------
if [[ ${SKIP_IMB:-0} != 1 ]]; then
    log "IMB-MPI1 Allreduce, $NP ranks, -msglog $MSGLOG -iter $IMB_ITER -time $IMB_TIME (Intel MPI, $I_MPI_FABRICS)"
    t0=$(now)
    LD_LIBRARY_PATH="$IMPI_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" timeout 300 \
        "$MPIEXEC" -n "$NP" "$IMB_VENV/bin/IMB-MPI1" Allreduce -npmin "$NP" \
        -msglog "$MSGLOG" -iter "$IMB_ITER" -time "$IMB_TIME" | tee "$TEE_IMB"
    log "IMB: $(elapsed "$t0")s"
fi

if [[ ${SKIP_MPI4PY:-0} != 1 ]]; then
    [[ -x $VENV/bin/python ]] || die "no venv at $VENV (run ci/provision/python-env.sh)"
    PY_LD="$IMB_VENV/mpich-shim:$IMPI_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # refuse figures that would not come from Intel MPI: without the shim the MPICH-built mpi4py
    # runs on Debian's MPICH even under Intel's mpiexec (both speak PMI-1)
    lib=$(LD_LIBRARY_PATH="$PY_LD" timeout 60 "$MPIEXEC" -n 1 "$VENV/bin/python" -c \
        'from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0].strip())')
    [[ $lib == *"Intel(R) MPI"* ]] || die "mpi4py does not run on Intel MPI here: $lib"
    log "mpi4py Allreduce loop, $NP ranks, --msglog $MSGLOG, on: $lib"
    t0=$(now)
    LD_LIBRARY_PATH="$PY_LD" timeout 300 \
        "$MPIEXEC" -n "$NP" "$VENV/bin/python" "$HERE/allreduce_loop.py" --msglog "$MSGLOG" \
        ${BENCH_OUT:+--json "$BENCH_OUT/mpi4py_allreduce.json"} | tee "$TEE_PY"
    log "mpi4py loop: $(elapsed "$t0")s"
fi
