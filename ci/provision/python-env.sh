#!/usr/bin/env bash
# Host-side Python environment for contprobe's tests, with real MPI, torch and horovod.
#
#   sudo bash ci/provision/python-env.sh          # as root, Debian 12
#
# Installs Debian's MPICH (mpiexec.mpich / mpicc.mpich), creates a venv usable by an unprivileged
# user, installs pytest & co, torch 2.13.0 (CPU build from the local wheel dir), numpy, mpi4py built
# from source against MPICH, and horovod 0.28.1 patched to build with C++17 (needed by torch >= 2.1).
# Built wheels (mpi4py, horovod) are cached so a second run on the same machine is fast.
# Ends by checking hvd.allreduce, torch.distributed (gloo) and mpi4py across ranks, as root and as
# $CONTPROBE_USER (default cpuser) when that user exists. Facts and timings: ci/provision/README-pyenv.md.
#
# Environment:
#   PYTHON                 interpreter for the venv (default: python3, or /usr/bin/python3 when the
#                          default python3 is not usable by unprivileged users, e.g. pyenv under /root)
#   CONTPROBE_VENV         venv path                      (default /opt/contprobe/venv)
#   CONTPROBE_WHEEL_CACHE  cache for wheels built here    (default /var/cache/contprobe/wheels)
#   CONTPROBE_USER         unprivileged user to check as  (default cpuser; skipped if it doesn't exist)
#   CONTPROBE_SKIP_CHECKS  1 = skip the final MPI/horovod checks
set -euo pipefail
umask 022

VENV=${CONTPROBE_VENV:-/opt/contprobe/venv}
WHEEL_CACHE=${CONTPROBE_WHEEL_CACHE:-/var/cache/contprobe/wheels}
CHECK_USER=${CONTPROBE_USER:-cpuser}
TORCH_VERSION=2.13.0
TORCH_SPEC="torch==${TORCH_VERSION}+cpu"   # local version label: only the local CPU wheel can satisfy it
MPI4PY_VERSION=4.1.2
HOROVOD_VERSION=0.28.1
APT_PACKAGES=(mpich libmpich-dev cmake make g++ python3 python3-dev python3-venv)
NPROC=$(nproc 2>/dev/null || echo 2)

log() { printf '[install-python-env] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

TIMINGS=()
now() { date +%s.%N; }
# timed NAME CMD...: run CMD, print and remember how long it took
timed() {
    local name=$1; shift
    local t0 t1 dt
    t0=$(now)
    log "== ${name}"
    "$@"
    t1=$(now)
    dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
    log "== ${name}: ${dt}s"
    TIMINGS+=("$(printf '%-34s %7ss' "$name" "$dt")")
}
T_START=$(now)

[[ $(id -u) -eq 0 ]] || die "run as root (apt-get, /opt, /var/cache)"

# ---------------------------------------------------------------------------------------------
# 1. Debian packages
step_apt() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "apt: all present (${APT_PACKAGES[*]})"
        return
    fi
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# 2. venv
# An interpreter an unprivileged user cannot execute (pyenv's lives under /root, mode 700) makes a
# venv that only root can use: the venv's python is a symlink into that tree and its stdlib and
# libpython stay there. Test as the user `nobody` with runuser, the way the tests are run as cpuser.
# (setpriv --reuid is no test: in this sandbox it could exec a binary under /root that runuser could not.)
runs_unprivileged() {
    (cd / && runuser -u nobody -- "$1" -c 'import encodings, sys') >/dev/null 2>&1
}

pick_python() {
    local req=${PYTHON:-python3} exe
    exe=$("$req" -c 'import sys; print(sys.executable)') || die "cannot run PYTHON=$req"
    if runs_unprivileged "$exe"; then
        PY_EXE=$exe
    elif [[ -z ${PYTHON:-} ]] && [[ -x /usr/bin/python3 ]] && runs_unprivileged /usr/bin/python3; then
        log "python3 ($exe) is not usable by unprivileged users; using /usr/bin/python3 instead"
        PY_EXE=/usr/bin/python3
    else
        die "PYTHON=$req ($exe) is not executable by unprivileged users; tests run as $CHECK_USER. Use PYTHON=/usr/bin/python3"
    fi
    local ver
    ver=$("$PY_EXE" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [[ $ver == 3.11 ]] || die "$PY_EXE is Python $ver; the local CPU torch wheel is cp311 (need Python 3.11)"
    log "python: $PY_EXE ($("$PY_EXE" -V 2>&1))"
}

step_venv() {
    if [[ -x $VENV/bin/python ]] && runs_unprivileged "$VENV/bin/python" \
        && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        log "venv: $VENV exists"
    else
        [[ -e $VENV ]] && { log "venv: $VENV unusable (or not usable unprivileged); recreating"; rm -rf "$VENV"; }
        mkdir -p "$VENV"
        "$PY_EXE" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
    fi
    # every directory above the venv must be traversable by the unprivileged user
    local d=$VENV
    while [[ $d != / ]]; do chmod o+rx "$d"; d=$(dirname "$d"); done
}

vpy() { "$VENV/bin/python" "$@"; }
vpip() { "$VENV/bin/python" -m pip "$@"; }

# ---------------------------------------------------------------------------------------------
# 3. pure-python packages, torch (CPU), numpy
step_base_packages() {
    if vpy - <<EOF 2>/dev/null
import importlib.metadata as md, sys
import pytest, junitparser, tabulate, numpy, torch
sys.exit(not (torch.__version__ == "${TORCH_VERSION}+cpu" and torch.version.cuda is None))
EOF
    then
        log "pytest/junitparser/tabulate/numpy/torch: present"
        return
    fi
    vpip install -q "$TORCH_SPEC" numpy pytest junitparser tabulate
}

check_torch_cpu() {
    local out
    out=$(vpy -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())")
    log "torch: $out"
    [[ $out == "${TORCH_VERSION}+cpu None False" ]] || die "torch is not the ${TORCH_VERSION} CPU build: $out"
}

# ---------------------------------------------------------------------------------------------
# 4. mpi4py from source against MPICH (the PyPI binary wheel wants libmpi.so.12, which Debian's
# MPICH does not provide under that name; MPICC is what mpi4py's build honours, CC is ignored)
MPI_CACHE=$WHEEL_CACHE/mpich
mpi4py_ok() {
    vpy - <<EOF 2>/dev/null
import mpi4py, sys
mpi4py.rc.initialize = False
from mpi4py import MPI
sys.exit(not (mpi4py.__version__ == "${MPI4PY_VERSION}" and MPI.Get_library_version().startswith("MPICH")))
EOF
}
step_mpi4py() {
    if mpi4py_ok; then log "mpi4py ${MPI4PY_VERSION} (MPICH): present"; return; fi
    mkdir -p "$MPI_CACHE"
    local whl
    whl=$(ls "$MPI_CACHE"/mpi4py-"${MPI4PY_VERSION}"-cp311-*.whl 2>/dev/null | head -1 || true)
    if [[ -z $whl ]]; then
        log "mpi4py: building ${MPI4PY_VERSION} from source with MPICC=mpicc.mpich (takes ~3.5 min on 2 cores)"
        MPICC=mpicc.mpich vpip wheel -q --no-cache-dir --no-deps --no-binary mpi4py \
            "mpi4py==${MPI4PY_VERSION}" -w "$MPI_CACHE"
        whl=$(ls "$MPI_CACHE"/mpi4py-"${MPI4PY_VERSION}"-cp311-*.whl | head -1)
    else
        log "mpi4py: using cached $whl"
    fi
    vpip install -q --no-deps --force-reinstall "$whl"
    mpi4py_ok || die "mpi4py installed but does not report MPICH"
}

# ---------------------------------------------------------------------------------------------
# 5. horovod 0.28.1, patched from C++14 to C++17 (torch >= 2.1 headers need C++17)
HVD_CACHE=$WHEEL_CACHE/horovod-torch${TORCH_VERSION}-cpu-mpich   # the wheel is tied to this torch ABI
horovod_ok() {
    vpy - <<EOF 2>/dev/null
import sys, horovod, horovod.torch as hvd
sys.exit(not (horovod.__version__ == "${HOROVOD_VERSION}" and hvd.mpi_built()))
EOF
}
build_horovod_wheel() {
    local work
    work=$(mktemp -d /tmp/contprobe-horovod.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    vpip download -q --no-deps --no-binary :all: "horovod==${HOROVOD_VERSION}" -d "$work"
    tar -xzf "$work/horovod-${HOROVOD_VERSION}.tar.gz" -C "$work"
    local src=$work/horovod-${HOROVOD_VERSION} f
    for f in CMakeLists.txt horovod/torch/CMakeLists.txt; do
        sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/$f"
        grep -q 'set(CMAKE_CXX_STANDARD 17)' "$src/$f" || die "C++17 patch did not apply to $f"
        ! grep -q 'set(CMAKE_CXX_STANDARD 14)' "$src/$f" || die "C++14 still set in $f"
    done
    log "horovod: building ${HOROVOD_VERSION} (C++17 patch, MPI, PyTorch, no gloo; ~2 min on 2 cores)"
    (
        cd "$src"
        export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
            HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=1 HOROVOD_CPU_OPERATIONS=MPI \
            MPICC=mpicc.mpich MPICXX=mpicxx.mpich CC=mpicc.mpich CXX=mpicxx.mpich \
            MAKEFLAGS="-j${NPROC}"
        vpip wheel --no-deps --no-build-isolation --no-cache-dir -w "$HVD_CACHE" . >"$work/build.log" 2>&1 \
            || { tail -40 "$work/build.log" >&2; die "horovod build failed"; }
    )
}
step_horovod() {
    if horovod_ok; then log "horovod ${HOROVOD_VERSION} (MPI, torch): present"; return; fi
    # horovod's runtime requirements, installed separately so that --no-deps keeps torch as it is
    vpip install -q cloudpickle psutil pyyaml packaging
    mkdir -p "$HVD_CACHE"
    local whl
    whl=$(ls "$HVD_CACHE"/horovod-"${HOROVOD_VERSION}"-cp311-*.whl 2>/dev/null | head -1 || true)
    if [[ -z $whl ]]; then
        build_horovod_wheel
        whl=$(ls "$HVD_CACHE"/horovod-"${HOROVOD_VERSION}"-cp311-*.whl | head -1)
    else
        log "horovod: using cached $whl"
    fi
    vpip install -q --no-deps --force-reinstall "$whl"
    horovod_ok || die "horovod installed but horovod.torch does not import with MPI built in"
}

step_permissions() {
    chmod -R a+rX "$VENV"
    [[ -d $WHEEL_CACHE ]] && chmod -R a+rX "$WHEEL_CACHE"
    return 0
}

# ---------------------------------------------------------------------------------------------
# 6. checks
HVD_CHECK='import sys, horovod.torch as hvd, torch
hvd.init()
t = hvd.allreduce(torch.tensor([hvd.rank() + 1.0]), op=hvd.Sum)
assert hvd.size() == 2 and t.item() == 3.0, t
sys.stdout.write("%d %d %s RANK-OK\n" % (hvd.rank(), hvd.size(), t.item())); sys.stdout.flush()'
GLOO_CHECK='import os, sys, torch, torch.distributed as dist
rank, size = int(os.environ["PMI_RANK"]), int(os.environ["PMI_SIZE"])
dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=size)
t = torch.tensor([rank + 1.0])
dist.all_reduce(t, op=dist.ReduceOp.SUM)
assert size == 2 and t.item() == 3.0, t
sys.stdout.write("%d %d %s RANK-OK\n" % (rank, size, t.item())); sys.stdout.flush()
dist.destroy_process_group()'
MPI4PY_CHECK='import sys
from mpi4py import MPI
c = MPI.COMM_WORLD
s = c.allreduce(c.rank + 1)
assert s == c.size * (c.size + 1) // 2
sys.stdout.write("%d %d %d %s RANK-OK\n" % (c.rank, c.size, s, MPI.Get_library_version().splitlines()[0].strip())); sys.stdout.flush()'

free_port() { vpy -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run_as USER CMD...: as root when USER is empty, else via runuser with that user's HOME
run_as() {
    local user=$1; shift
    if [[ -z $user ]]; then
        (cd / && "$@")
    else
        local home
        home=$(getent passwd "$user" | cut -d: -f6)
        (cd / && runuser -u "$user" -- env HOME="$home" "$@")
    fi
}

# check_one USER WHAT N CMD...: CMD must exit 0 and N ranks must say RANK-OK (each rank asserts its result)
check_one() {
    local who=$1 what=$2 n=$3; shift 3
    local out rc=0
    out=$(run_as "$who" timeout 180 "$@" 2>&1) || rc=$?
    printf '%s\n' "$out" | sed "s/^/    [${who:-root}] ${what}: /" >&2
    [[ $rc -eq 0 ]] || die "${what} check failed as ${who:-root} (rc=$rc)"
    local oks
    oks=$(printf '%s\n' "$out" | grep -o 'RANK-OK' | wc -l)
    [[ $oks -eq $n ]] || die "${what} check as ${who:-root}: expected $n ranks to report RANK-OK, got $oks"
}

checks_for() {
    local who=$1
    check_one "$who" "torch" 1 "$VENV/bin/python" -c \
        'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), "RANK-OK")'
    check_one "$who" "mpi4py" 4 mpiexec.mpich -n 4 "$VENV/bin/python" -c "$MPI4PY_CHECK"
    check_one "$who" "horovod" 2 mpiexec.mpich -n 2 "$VENV/bin/python" -c "$HVD_CHECK"
    check_one "$who" "torch.distributed gloo" 2 mpiexec.mpich -n 2 \
        -genv MASTER_ADDR 127.0.0.1 -genv MASTER_PORT "$(free_port)" \
        "$VENV/bin/python" -c "$GLOO_CHECK"
}

step_checks() {
    checks_for ""
    if id "$CHECK_USER" >/dev/null 2>&1; then
        checks_for "$CHECK_USER"
    else
        log "checks: user $CHECK_USER does not exist; unprivileged checks skipped"
    fi
}

VERSIONS_PY='import mpi4py, numpy, torch, horovod, pytest
mpi4py.rc.initialize = False
from mpi4py import MPI
print("torch", torch.__version__, "numpy", numpy.__version__, "mpi4py", mpi4py.__version__,
      "horovod", horovod.__version__, "pytest", pytest.__version__,
      "|", MPI.Get_library_version().splitlines()[0].strip())'

# ---------------------------------------------------------------------------------------------
# (a function, so that editing this file while it runs cannot change what the running bash reads)
main() {
    timed "apt packages" step_apt
    pick_python
    timed "venv" step_venv
    timed "pytest, torch (CPU), numpy" step_base_packages
    check_torch_cpu
    timed "mpi4py (source, MPICH)" step_mpi4py
    timed "horovod ${HOROVOD_VERSION} (C++17 patch)" step_horovod
    timed "permissions" step_permissions
    if [[ ${CONTPROBE_SKIP_CHECKS:-0} != 1 ]]; then
        timed "checks (root + ${CHECK_USER})" step_checks
    fi

    log "versions: $(vpy -c "$VERSIONS_PY")"
    log "timings:"
    for t in "${TIMINGS[@]}"; do log "  $t"; done
    log "  $(printf '%-34s %7ss' total "$(awk -v a="$T_START" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}')")"
    log "venv ready: $VENV"
}

main "$@"
