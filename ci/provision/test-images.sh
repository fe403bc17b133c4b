#!/usr/bin/env bash
# Build the container images contprobe's tests run against, into a cache directory.
#
#   rootfs/       sandbox: debootstrap minbase bookworm + python3 + python3-pytest (world-readable;
#                 usable as a `Bootstrap: localimage` base for `apptainer build --fakeroot` as a user)
#   base.sif      that rootfs: Python 3.11 + pytest, the "all pass" image
#   nopytest.sif  base without pytest
#   mpich.sif     base + Debian MPICH + mpi4py built from source with mpicc.mpich
#                 (+ torch/horovod copied from $CONTPROBE_VENV when that venv has them)
#   openmpi.sif   base + Debian python3-mpi4py (Open MPI): "every rank is rank 0" under MPICH's mpiexec
#   hostile.sif   base + a payload that plants links, FIFOs, forgeries, escapes and huge texts in its results
#
# Usage: bash ci/provision/test-images.sh [IMAGE...]      (as root, after ci/provision/apptainer.sh)
#        IMAGE: rootfs base nopytest mpich openmpi hostile (default: all)
# Env:   CONTPROBE_IMAGES  cache dir (default /var/tmp/contprobe-images)
#        CONTPROBE_VENV    venv with torch + horovod to copy into mpich.sif (default /opt/contprobe/venv)
#        CONTPROBE_APT_MIRROR  Debian mirror (default: the one in this machine's apt sources)
#        CONTPROBE_REBUILD=1   rebuild even when up to date
# Each image has NAME.recipe-sha256 beside it; an image whose recipe (the shell functions below and
# its inputs) is unchanged is skipped, so a second run takes about a second.
set -euo pipefail

CACHE=${CONTPROBE_IMAGES:-/var/tmp/contprobe-images}
VENV=${CONTPROBE_VENV:-/opt/contprobe/venv}
SUITE=bookworm
MPI4PY_VERSION=4.1.2
# mpi4py's MPI.c at the default -O2 -g takes ~140 s of CPU (220 s wall on a busy 2-core machine);
# at -O0 -g0 a fraction of that. Speed of mpi4py itself does not matter for these tests.
MPI4PY_CFLAGS=${CONTPROBE_MPI4PY_CFLAGS:--O0 -g0}
WORK=$CACHE/.work
T_ALL=$(date +%s)

log() { printf '[build-test-images] %s\n' "$*" >&2; }
T_STEP=$(date +%s)
phase() { log "  ... $1: $(( $(date +%s) - T_STEP ))s into this step"; }

# shellcheck source=../lib/apt-mirror.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt-mirror.sh"
# shellcheck source=../lib/image-cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/image-cache.sh"
# shellcheck source=../lib/chroot.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/chroot.sh"
require_build_tools
MIRROR=$(mirror_uri)

# ---------- helpers ------------------------------------------------------------------------------

copy_rootfs() {  # NAME -> prints a fresh copy's path
    local d="$WORK/$1"
    rm -rf "$d"; mkdir -p "$WORK"
    cp -a "$CACHE/rootfs" "$d"
    echo "$d"
}

# ---------- the recipes ---------------------------------------------------------------------------

recipe_rootfs() {
    local new="$WORK/rootfs.new"
    rm -rf "$new"; mkdir -p "$WORK"
    log "debootstrap --variant=minbase --include=python3,python3-pytest $SUITE from $MIRROR"
    debootstrap --variant=minbase --include=python3,python3-pytest "$SUITE" "$new" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    finish_tree "$new"
    # world-readable, so an unprivileged user can use it as a --fakeroot build base
    chmod -R a+rX "$new"
    rm -rf "$CACHE/rootfs"
    mv "$new" "$CACHE/rootfs"
}

recipe_base() {
    build_sif "$CACHE/rootfs" base.sif
}

recipe_nopytest() {
    local d; d=$(copy_rootfs nopytest)
    in_chroot "$d" apt-get "${APT_Q[@]}" purge -y --autoremove python3-pytest >/dev/null
    in_chroot "$d" python3 -c 'import pytest' 2>/dev/null && die "pytest still importable in nopytest"
    finish_tree "$d"
    build_sif "$d" nopytest.sif
    rm -rf "$d"
}

# torch + horovod (+ small deps) from the project venv, when it has them; prints what would be copied
venv_items() {
    local sp="$VENV/lib/python3.11/site-packages"
    [ -d "$sp/torch" ] && [ -d "$sp/horovod" ] || return 0
    local pat
    for pat in torch 'torch-*.dist-info' torchgen functorch horovod 'horovod-*.dist-info' \
               cloudpickle 'cloudpickle-*.dist-info' psutil 'psutil-*.dist-info' \
               yaml _yaml 'PyYAML-*.dist-info' 'pyyaml-*.dist-info' packaging 'packaging-*.dist-info' \
               typing_extensions.py 'typing_extensions-*.dist-info' sympy 'sympy-*.dist-info' \
               mpmath 'mpmath-*.dist-info' networkx 'networkx-*.dist-info' jinja2 'jinja2-*.dist-info' \
               'Jinja2-*.dist-info' markupsafe 'MarkupSafe-*.dist-info' 'markupsafe-*.dist-info' \
               filelock 'filelock-*.dist-info' fsspec 'fsspec-*.dist-info' \
               numpy numpy.libs 'numpy-*.dist-info'; do
        # shellcheck disable=SC2086
        ( cd "$sp" && ls -d $pat 2>/dev/null ) || true
    done | sort -u
}

recipe_mpich() {
    local d; d=$(copy_rootfs mpich)
    log "mpich: apt-get install mpich libmpich-dev python3-dev python3-pip gcc"
    in_chroot "$d" apt-get "${APT_Q[@]}" update
    in_chroot "$d" apt-get "${APT_Q[@]}" install -y --no-install-recommends \
        mpich libmpich-dev python3-dev python3-pip gcc libc6-dev >/dev/null
    phase "apt-get install"
    log "mpich: MPICC=mpicc.mpich CFLAGS='$MPI4PY_CFLAGS' pip wheel --no-binary mpi4py mpi4py==$MPI4PY_VERSION (from source)"
    # the wheel built here is kept in $CACHE/.wheels: a rebuild of this image (changed recipe or
    # venv) then skips compiling mpi4py (minutes on 2 cores). Key: mpi4py + Debian MPICH versions.
    local mpich_v whl wdir
    mpich_v=$(in_chroot "$d" dpkg-query -W -f='${Version}' libmpich-dev | tr -c 'A-Za-z0-9.\n' _)
    wdir="$CACHE/.wheels/mpich-$mpich_v-cflags$(printf '%s' "$MPI4PY_CFLAGS" | tr -c 'A-Za-z0-9' _)"
    mkdir -p "$wdir" "$d/root/wheels"
    whl=$(ls "$wdir"/mpi4py-"$MPI4PY_VERSION"-*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$whl" ]; then
        in_chroot "$d" env MPICC=mpicc.mpich CC=mpicc.mpich CFLAGS="$MPI4PY_CFLAGS" \
            pip wheel -q --no-cache-dir --no-deps --no-binary mpi4py -w /root/wheels "mpi4py==$MPI4PY_VERSION" \
            2>&1 | { grep -v '^DEPRECATION: --no-binary' || true; } >&2
        cp "$d"/root/wheels/mpi4py-*.whl "$wdir/"
        phase "mpi4py compiled from source"
    else
        log "mpich: using cached wheel $whl (compiled from source earlier against libmpich-dev $mpich_v)"
        cp "$whl" "$d/root/wheels/"
    fi
    in_chroot "$d" sh -c 'pip install -q --break-system-packages --no-index --no-deps /root/wheels/mpi4py-*.whl'
    rm -rf "$d/root/wheels"
    # the build front end is not part of the image's purpose
    in_chroot "$d" apt-get "${APT_Q[@]}" purge -y --autoremove python3-pip >/dev/null
    local items; items=$(venv_items)
    if [ -n "$items" ]; then
        local dst="$d/usr/local/lib/python3.11/dist-packages" sp="$VENV/lib/python3.11/site-packages"
        log "mpich: copying from $sp: $(echo $items)"
        mkdir -p "$dst"
        local it
        for it in $items; do cp -a "$sp/$it" "$dst/"; done
        printf '#!/usr/bin/python3\nfrom horovod.runner.launch import run_commandline\nrun_commandline()\n' \
            >"$d/usr/local/bin/horovodrun"
        chmod 755 "$d/usr/local/bin/horovodrun"
        in_chroot "$d" python3 -c 'import torch, horovod.torch; print("torch", torch.__version__, "horovod", horovod.__version__)' >&2 \
            || die "torch/horovod copied from $VENV do not import in the image"
    else
        log "mpich: no torch+horovod in $VENV, image without them"
    fi
    in_chroot "$d" python3 -c 'from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])' >&2
    finish_tree "$d"
    phase "copies and checks"
    build_sif "$d" mpich.sif
    rm -rf "$d"
}

recipe_openmpi() {
    local d; d=$(copy_rootfs openmpi)
    log "openmpi: apt-get install python3-mpi4py (Open MPI)"
    in_chroot "$d" apt-get "${APT_Q[@]}" update
    in_chroot "$d" apt-get "${APT_Q[@]}" install -y --no-install-recommends python3-mpi4py >/dev/null
    phase "apt-get install"
    in_chroot "$d" python3 -c 'from mpi4py import MPI; print(MPI.Get_library_version().splitlines()[0])' >&2
    finish_tree "$d"
    build_sif "$d" openmpi.sif
    rm -rf "$d"
}

# hostile: base + a payload every Python start loads (.pth) that, when the probes end, plants in the
# results directory what issue 9 lists (tests/test_hostile_e2e.py). Files only: no chroot needed.
HOSTILE_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/hostile"
recipe_hostile() {
    local d; d=$(copy_rootfs hostile)
    local dst="$d/usr/local/lib/python3.11/dist-packages"
    mkdir -p "$dst"
    install -m 644 "$HOSTILE_SRC/contprobe_hostile.py" "$HOSTILE_SRC/contprobe_hostile.pth" "$dst/"
    build_sif "$d" hostile.sif
    rm -rf "$d"
}

# ---------- driver --------------------------------------------------------------------------------

mkdir -p "$CACHE"
chmod 755 "$CACHE"
# one build at a time per cache (CI and a developer may share the machine)
exec 9>"$CACHE/.lock"
flock -w 1800 9 || die "another build holds $CACHE/.lock"
HELPERS="make_dev in_chroot finish_tree build_sif copy_rootfs"
H_ROOTFS=$(recipe_hash "recipe_rootfs finish_tree" "$SUITE" v1)
H_BASE=$(recipe_hash "recipe_base build_sif" "$H_ROOTFS" "$SQUASH_ARGS")
H_NOPYTEST=$(recipe_hash "recipe_nopytest $HELPERS" "$H_ROOTFS" "$SQUASH_ARGS")
H_MPICH=$(recipe_hash "recipe_mpich venv_items $HELPERS" "$H_ROOTFS" "$SQUASH_ARGS" "$MPI4PY_VERSION" "$MPI4PY_CFLAGS" \
          "$(venv_items | tr '\n' ' ')")
H_OPENMPI=$(recipe_hash "recipe_openmpi $HELPERS" "$H_ROOTFS" "$SQUASH_ARGS")
H_HOSTILE=$(recipe_hash "recipe_hostile $HELPERS" "$H_ROOTFS" "$SQUASH_ARGS" \
            "$(cat "$HOSTILE_SRC/contprobe_hostile.py" "$HOSTILE_SRC/contprobe_hostile.pth" | sha)")


WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=(rootfs base nopytest mpich openmpi hostile)
for w in "${WANT[@]}"; do
    case $w in rootfs|base|nopytest|mpich|openmpi|hostile) ;; *) die "unknown image '$w'";; esac
done
want() { local w; for w in "${WANT[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

# every image derives from rootfs
cached_step rootfs "$H_ROOTFS" recipe_rootfs
want base     && cached_step base.sif "$H_BASE" recipe_base
want nopytest && cached_step nopytest.sif "$H_NOPYTEST" recipe_nopytest
want mpich    && cached_step mpich.sif "$H_MPICH" recipe_mpich
want openmpi  && cached_step openmpi.sif "$H_OPENMPI" recipe_openmpi
want hostile  && cached_step hostile.sif "$H_HOSTILE" recipe_hostile
rm -rf "$WORK"

log "images in $CACHE (total $(( $(date +%s) - T_ALL ))s):"
printf '  %s\n' "${SUMMARY[@]}" >&2
