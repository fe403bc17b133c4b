#!/usr/bin/env bash
# Test images for the ends of contprobe's Python range, made with debootstrap like the others:
#
#   py39-rootfs/         sandbox: debootstrap minbase bullseye + python3 + python3-pytest
#   py39.sif             Python 3.9 + Debian's pytest 6.0.2 (older than contprobe's floor:
#                        the bundled pytest must take over)
#   py39-nopytest.sif    Python 3.9, no pytest at all (the bundled pytest is used)
#   py313-rootfs/        sandbox: debootstrap minbase trixie + python3 + python3-pytest
#   py313.sif            Python 3.13 + pytest 8.x
#   py313-nopytest.sif   Python 3.13, no pytest
#
# Usage: bash ci/provision/py-range-images.sh [py39|py313 ...]   (as root, after ci/provision/apptainer.sh)
# Env:   CONTPROBE_IMAGES      cache dir (default /var/tmp/contprobe-images)
#        CONTPROBE_APT_MIRROR  Debian mirror (default: the one in this machine's apt sources)
#        CONTPROBE_REBUILD=1   rebuild even when up to date
#        CONTPROBE_USER        user for the final exec check (default cpuser; root cannot run
#                              containers on the CI machine)
# Like ci/provision/test-images.sh, each output has NAME.recipe-sha256 beside it and is skipped when its
# recipe is unchanged (a re-run takes about a second). This script has its own lock and work dir, so
# it can run while build-test-images.sh builds the bookworm images.
set -euo pipefail

CACHE=${CONTPROBE_IMAGES:-/var/tmp/contprobe-images}
CPUSER=${CONTPROBE_USER:-cpuser}
WORK=$CACHE/.work-py-range
T_ALL=$(date +%s)
RECORD_WIDTH=20

log() { printf '[build-py-range] %s\n' "$*" >&2; }

# shellcheck source=../lib/apt-mirror.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt-mirror.sh"
# shellcheck source=../lib/image-cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/image-cache.sh"
# shellcheck source=../lib/chroot.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/chroot.sh"
require_build_tools
MIRROR=$(mirror_uri)

# ---------- helpers (the cache and its recipe hashes: ci/lib/image-cache.sh; chroot and SIF: ci/lib/chroot.sh)

# what the image has: "python 3.9.2 pytest 6.0.2" or "python 3.13.5 pytest none"
versions() {  # SANDBOX
    in_chroot "$1" python3 -c 'import sys
try:
    import pytest; p = pytest.__version__
except ImportError:
    p = "none"
print("python %d.%d.%d pytest %s" % (sys.version_info[:3] + (p,)))'
}

# ---------- recipes (SUITE from the image name) -------------------------------------------------------

suite_of() { case $1 in py39) echo bullseye;; py313) echo trixie;; *) die "unknown image $1";; esac; }

recipe_root() {  # TAG
    local tag=$1 suite new; suite=$(suite_of "$1")
    new="$WORK/$tag-rootfs.new"
    rm -rf "$new"; mkdir -p "$WORK"
    log "$tag: debootstrap --variant=minbase --include=python3,python3-pytest $suite from $MIRROR"
    # shellcheck disable=SC2054  # the commas belong to --include
    local -a boot=(debootstrap --variant=minbase --include=python3,python3-pytest "$suite" "$new" "$MIRROR")
    "${boot[@]}" >"$WORK/debootstrap-$tag.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap-$tag.log" >&2; die "debootstrap $suite failed"; }
    log "$tag: $(versions "$new")"
    finish_tree "$new"
    chmod -R a+rX "$new"   # an unprivileged user may use it as a --fakeroot build base or a ch-run dir
    rm -rf "$CACHE/$tag-rootfs"
    mv "$new" "$CACHE/$tag-rootfs"
}

recipe_sif() {  # TAG
    build_sif "$CACHE/$1-rootfs" "$1.sif"
}

recipe_nopytest() {  # TAG
    local d="$WORK/$1-nopytest"
    rm -rf "$d"; mkdir -p "$WORK"
    cp -a "$CACHE/$1-rootfs" "$d"
    # purge, not a second debootstrap: same base packages as the pytest image, ~5 s instead of ~80 s
    in_chroot "$d" apt-get "${APT_Q[@]}" purge -y --autoremove python3-pytest >/dev/null
    local v; v=$(versions "$d")
    case $v in *"pytest none") ;; *) die "$1-nopytest still has pytest: $v";; esac
    log "$1-nopytest: $v"
    finish_tree "$d"
    build_sif "$d" "$1-nopytest.sif"
    rm -rf "$d"
}

# ---------- driver -------------------------------------------------------------------------------------

mkdir -p "$CACHE"
chmod 755 "$CACHE"
exec 9>"$CACHE/.py-range.lock"
flock -w 1800 9 || die "another build holds $CACHE/.py-range.lock"
HELPERS="make_dev in_chroot finish_tree build_sif versions suite_of"


WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=(py39 py313)
for tag in "${WANT[@]}"; do
    suite=$(suite_of "$tag")
    h_root=$(recipe_hash "recipe_root $HELPERS" "$suite" v1)
    cached_step "$tag-rootfs" "$h_root" recipe_root "$tag"
    cached_step "$tag.sif" "$(recipe_hash "recipe_sif build_sif" "$h_root" "$SQUASH_ARGS")" recipe_sif "$tag"
    cached_step "$tag-nopytest.sif" "$(recipe_hash "recipe_nopytest $HELPERS" "$h_root" "$SQUASH_ARGS")" \
        recipe_nopytest "$tag"
done
rm -rf "$WORK"

# the images run for real as the unprivileged user (root cannot run containers on the CI machine)
if id "$CPUSER" >/dev/null 2>&1; then
    for tag in "${WANT[@]}"; do
        for img in "$tag.sif" "$tag-nopytest.sif"; do
            out=$(cd / && runuser -u "$CPUSER" -- apptainer -s exec "$CACHE/$img" python3 -c \
                'import sys
try:
    import pytest; p = pytest.__version__
except ImportError:
    p = "none"
print("python %d.%d.%d pytest %s" % (sys.version_info[:3] + (p,)))' 2>&1) \
                || die "$img does not run as $CPUSER: $out"
            log "check $img as $CPUSER: $out"
        done
    done
fi

log "images in $CACHE (total $(( $(date +%s) - T_ALL ))s):"
printf '  %s\n' "${SUMMARY[@]}" >&2
