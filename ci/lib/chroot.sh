# Sourced by the image-building scripts (ci/provision/test-images.sh, py-range-images.sh), after
# ci/lib/image-cache.sh: building a Debian tree in a chroot and packing it as a SIF. The caller defines
# log() and CACHE. These functions are part of every recipe hash: a change here rebuilds the images.

# zstd level 3: ~4x faster than apptainer's default gzip on 2 cores, about the same size
SQUASH_ARGS='-comp zstd -Xcompression-level 3'
APT_Q=(-qq -o Dpkg::Use-Pty=0 -o Acquire::Languages=none -o Acquire::Check-Valid-Until=false)

die() { log "ERROR: $*"; exit 1; }

require_build_tools() {
    [ "$(id -u)" = 0 ] || die "must run as root"
    command -v apptainer >/dev/null || die "apptainer not found: run ci/provision/apptainer.sh first"
    command -v debootstrap >/dev/null || die "debootstrap not found: run ci/provision/apptainer.sh first"
}

# minimal /dev for a chroot (no bind mount of the host's /dev: a later `rm -rf dev/*` stays safe)
make_dev() {
    local d=$1/dev
    mkdir -p "$d"
    [ -e "$d/null" ]    || mknod -m 666 "$d/null" c 1 3
    [ -e "$d/zero" ]    || mknod -m 666 "$d/zero" c 1 5
    [ -e "$d/full" ]    || mknod -m 666 "$d/full" c 1 7
    [ -e "$d/random" ]  || mknod -m 666 "$d/random" c 1 8
    [ -e "$d/urandom" ] || mknod -m 666 "$d/urandom" c 1 9
    [ -e "$d/tty" ]     || mknod -m 666 "$d/tty" c 5 0
    [ -e "$d/fd" ]      || ln -s /proc/self/fd "$d/fd"
    mkdir -p "$d/pts" "$d/shm"
}

# run a command in a chroot with a clean environment (+ proxy settings and the host CA for pip)
in_chroot() {
    local dir=$1; shift
    make_dev "$dir"
    mkdir -p "$dir/proc" "$dir/sys"
    if ! mountpoint -q "$dir/proc"; then
        mount -t proc proc "$dir/proc"; MOUNTED+=("$dir/proc")
    fi
    # sysfs read-only: hwloc (MPICH, Open MPI) reads the CPU topology there
    if ! mountpoint -q "$dir/sys"; then
        mount -t sysfs -o ro sysfs "$dir/sys"; MOUNTED+=("$dir/sys")
    fi
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"; chmod 755 "$dir/usr/sbin/policy-rc.d"
    # host CA bundle (the network may go through a TLS-intercepting proxy) at a path that
    # update-ca-certificates does not manage; removed again in finish_tree
    cp /etc/ssl/certs/ca-certificates.crt "$dir/root/.contprobe-build-ca.crt"
    local -a envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
                   LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
                   PIP_CERT=/root/.contprobe-build-ca.crt SSL_CERT_FILE=/root/.contprobe-build-ca.crt
                   PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore)
    local v
    for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -n "${!v:-}" ] && envs+=("$v=${!v}")
    done
    local rc=0
    env -i "${envs[@]}" chroot "$dir" "$@" || rc=$?
    umount "$dir/proc" || umount -l "$dir/proc"
    umount "$dir/sys" || umount -l "$dir/sys"
    return $rc
}

# shrink a tree and make it a clean image/build base
finish_tree() {
    local dir=$1
    if mountpoint -q "$dir/proc" || mountpoint -q "$dir/sys"; then die "$dir/proc or /sys still mounted"; fi
    rm -f "$dir/usr/sbin/policy-rc.d" "$dir/root/.contprobe-build-ca.crt"
    rm -rf "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
           "$dir"/var/cache/apt/archives/partial/* "$dir"/var/lib/apt/lists/* \
           "$dir"/root/.cache "$dir"/tmp/* "$dir"/var/tmp/* "$dir"/var/log/apt/* "$dir"/var/log/dpkg.log
    find "$dir/usr" -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null || true
    # an empty /dev: apptainer provides its own; device nodes in a build base break fakeroot builds
    rm -rf "${dir:?}"/dev/*
    mkdir -p "$dir/proc" "$dir/sys" "$dir/tmp"
    chmod 1777 "$dir/tmp"
}

build_sif() {  # SANDBOX NAME
    local tmp="$CACHE/.$2.tmp"
    rm -f "$tmp"
    # shellcheck disable=SC2086
    apptainer -q build -F --mksquashfs-args "$SQUASH_ARGS" "$tmp" "$1" >/dev/null
    chmod 644 "$tmp"
    mv -f "$tmp" "$CACHE/$2"
}
