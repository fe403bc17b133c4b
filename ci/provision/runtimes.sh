#!/usr/bin/env bash
# The other container runtimes contprobe backs, set up for the unprivileged CI user:
#   rootless podman 4.3.1 (Debian's; NERSC's podman-hpc wraps podman) and Charliecloud 0.31.
#
# Usage: bash ci/provision/runtimes.sh [install] [verify]   (as root; default: both)
#   install  apt packages (catatonit for `podman run --init`, which contprobe's podman backend uses);
#            XDG_RUNTIME_DIR; ~USER/.config/containers/{containers.conf,storage.conf};
#            Charliecloud images of base.sif for $USER: $CONTPROBE_IMAGES/ch/base.sqfs (squashfs
#            taken out of the SIF) and $CONTPROBE_IMAGES/ch/base/ (a directory image owned by USER)
#   verify   run python3 in base with each runtime as USER, print timings. podman uses the registry
#            (ci/services/registry/registry.sh up) when it answers, else `podman import` of rootfs/.
# Env: CONTPROBE_USER (default cpuser), CONTPROBE_IMAGES (default /var/tmp/contprobe-images),
#      CONTPROBE_REGISTRY_DIR / CONTPROBE_REGISTRY_PORT (as registry.sh)
# Facts this relies on (checked on the CI machine, see ci/services/registry/RUNTIMES.md):
#  - slirp4netns cannot open /dev/net/tun here         -> netns = "host"
#  - crun refuses the hybrid cgroup v1 layout           -> runtime = "runc"
#  - without containers-storage it falls back to vfs (12 s a run) -> driver = "overlay"
#    (native rootless overlay; 0.4 s a run)
#  - no systemd/logind: nobody makes /run/user/UID      -> made here; podman remembers the
#    first runtime dir it used, so it must exist before the first podman call
#  - no systemd: cgroup_manager = "cgroupfs", events_logger = "file"
#  - Charliecloud refuses to run with $USER unset, so every ch-* call sets it
set -euo pipefail

CPUSER=${CONTPROBE_USER:-cpuser}
IMAGES=${CONTPROBE_IMAGES:-/var/tmp/contprobe-images}
REGDIR=${CONTPROBE_REGISTRY_DIR:-/var/tmp/contprobe-registry}
REGPORT=${CONTPROBE_REGISTRY_PORT:-5443}
REG=127.0.0.1:$REGPORT

log() { printf '[setup-runtimes] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
id "$CPUSER" >/dev/null 2>&1 || die "user $CPUSER missing: run ci/provision/apptainer.sh first"

UID_=$(id -u "$CPUSER")
HOME_=$(getent passwd "$CPUSER" | cut -d: -f6)
RUNDIR=/run/user/$UID_
CH=$IMAGES/ch

# as_user CMD...: CMD as the CI user with the environment a login would give (no systemd here).
# cd / first: the caller's cwd may be unreadable for the user.
as_user() {
    local -a envs=("HOME=$HOME_" "USER=$CPUSER" "LOGNAME=$CPUSER" PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
                   "XDG_RUNTIME_DIR=$RUNDIR" LANG=C.UTF-8)
    (cd / && runuser -u "$CPUSER" -- env -i "${envs[@]}" "$@")
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }

install_packages() {
    local -a need=() p
    for p in podman uidmap runc conmon catatonit charliecloud squashfs-tools squashfuse; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        log "apt-get install ${need[*]}"
        local -a apt=(apt-get -o DPkg::Lock::Timeout=900 -y -qq --no-install-recommends install "${need[@]}")
        # a fresh machine's package lists may not know them yet
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" >/dev/null 2>&1 || {
            apt-get -o DPkg::Lock::Timeout=900 -qq update; DEBIAN_FRONTEND=noninteractive "${apt[@]}" >/dev/null; }
    fi
}

configure_podman() {
    # a subordinate id range: without it rootless podman cannot map the image's uids (see RUNTIMES.md)
    grep -q "^$CPUSER:" /etc/subuid || die "$CPUSER has no /etc/subuid range (ci/provision/apptainer.sh makes it)"
    grep -q "^$CPUSER:" /etc/subgid || die "$CPUSER has no /etc/subgid range"
    # what logind would make at login
    mkdir -p "$RUNDIR"
    chown "$CPUSER:$CPUSER" "$RUNDIR"
    chmod 700 "$RUNDIR"
    local cfg=$HOME_/.config/containers
    install -d -o "$CPUSER" -g "$CPUSER" -m 755 "$HOME_/.config" "$cfg"
    cat >"$cfg/containers.conf.tmp" <<'EOF'
# written by contprobe ci/provision/runtimes.sh (rootless podman on the CI machine)
[containers]
# slirp4netns cannot open /dev/net/tun in this sandbox; tests only need loopback
netns = "host"

[engine]
# crun refuses hybrid cgroup v1; runc works
runtime = "runc"
# no systemd: no user slice and no journal
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    cat >"$cfg/storage.conf.tmp" <<'EOF'
# written by contprobe ci/provision/runtimes.sh
[storage]
# native rootless overlay: 0.4 s a run; the vfs fallback copies the image every run (12 s)
driver = "overlay"
EOF
    local f driver_changed=0
    # only a storage driver change needs the old storage gone (podman refuses to switch drivers);
    # any other change must keep the images other tests imported
    if ! grep -q '^driver' "$cfg/storage.conf" 2>/dev/null || \
        ! cmp -s <(grep '^driver' "$cfg/storage.conf.tmp") <(grep '^driver' "$cfg/storage.conf"); then
        driver_changed=1
    fi
    for f in containers.conf storage.conf; do
        if cmp -s "$cfg/$f.tmp" "$cfg/$f"; then rm -f "$cfg/$f.tmp"
        else mv -f "$cfg/$f.tmp" "$cfg/$f"; fi
        chown "$CPUSER:$CPUSER" "$cfg/$f"
    done
    if [ $driver_changed = 1 ] && [ -d "$HOME_/.local/share/containers/storage" ]; then
        log "podman storage driver changed: podman system reset for $CPUSER"
        as_user podman system reset --force >/dev/null 2>&1 || true
    fi
    log "podman: $(as_user podman info --format '{{.Store.GraphDriverName}} {{.Host.OCIRuntime.Name}} rootless={{.Host.Security.Rootless}}')"
}

# Charliecloud images of base.sif for the user: the SIF's squashfs partition as a file (ch-run
# mounts it with squashfuse) and a directory image unpacked from it (owned by the user, the way
# Charliecloud's unprivileged image directories are)
charliecloud_images() {
    [ -f "$IMAGES/base.sif" ] || { log "no $IMAGES/base.sif yet: Charliecloud images skipped"; return 0; }
    local src; src=$(cat "$IMAGES/base.sif.recipe-sha256" 2>/dev/null || sha256sum <"$IMAGES/base.sif" | cut -c1-64)
    if [ -d "$CH/base" ] && [ -f "$CH/base.sqfs" ] && [ "$(cat "$CH/base.src" 2>/dev/null)" = "$src" ]; then
        log "charliecloud images up to date"; return 0
    fi
    local t0; t0=$(now)
    install -d -o "$CPUSER" -g "$CPUSER" -m 755 "$CH"
    # the squashfs partition's id (3 for apptainer-built SIFs; looked up, not assumed)
    local id
    id=$(apptainer sif list "$IMAGES/base.sif" | awk '/Squashfs/ && /FS/ {print $1+0; exit}')
    [ -n "$id" ] || die "no squashfs partition in base.sif"
    as_user sh -c "apptainer sif dump $id '$IMAGES/base.sif' > '$CH/base.sqfs.tmp'"
    mv -f "$CH/base.sqfs.tmp" "$CH/base.sqfs"
    as_user rm -rf "$CH/base.new"
    as_user unsquashfs -no-xattrs -no-progress -quiet -d "$CH/base.new" "$CH/base.sqfs" >/dev/null
    # ch-run binds onto these and needs them to exist in a read-only image: /dev and /proc are
    # empty in our images already; /home, /tmp and /mnt exist in a Debian base
    as_user rm -rf "$CH/base"
    as_user mv "$CH/base.new" "$CH/base"
    echo "$src" >"$CH/base.src"
    log "charliecloud images: $CH/base.sqfs, $CH/base/ in $(since "$t0")s"
}

do_install() {
    local t0; t0=$(now)
    install_packages
    configure_podman
    charliecloud_images
    log "install done in $(since "$t0")s"
}

# ---------- verify -------------------------------------------------------------------------------

registry_up() { curl -sf --cacert "$REGDIR/ca.crt" "https://$REG/v2/" >/dev/null 2>&1; }

do_verify() {
    local t0 out img
    # podman: from the registry (the CA given per call, so an untrusted-CA test stays possible),
    # else imported from the rootfs
    if registry_up; then
        img=$REG/base:1
        as_user podman rmi -f "$img" >/dev/null 2>&1 || true
        t0=$(now)
        as_user podman pull -q --cert-dir "$REGDIR/certs.d/$REG" "docker://$img" >/dev/null
        log "podman pull docker://$img: $(since "$t0")s"
    else
        img=localhost/contprobe/base:1
        if ! as_user podman image exists "$img"; then
            t0=$(now)
            tar -C "$IMAGES/rootfs" --numeric-owner -cf - . | as_user podman import -q - "$img" >/dev/null
            log "podman import of rootfs/: $(since "$t0")s"
        fi
    fi
    t0=$(now)
    out=$(as_user podman run --rm "$img" python3 -c 'print(1)')
    [ "$out" = 1 ] || die "podman run printed '$out'"
    log "podman run --rm $img python3 -c 'print(1)': $(since "$t0")s (first run)"
    t0=$(now)
    out=$(as_user podman run --rm -v /tmp:/mnt/host-tmp -e CONTPROBE_X=42 "$img" \
          sh -c 'test -e /run/.containerenv && echo "$CONTPROBE_X $(cat /run/.containerenv | wc -c)"')
    log "podman run -v -e, /run/.containerenv: '$out' in $(since "$t0")s"

    [ -d "$CH/base" ] || { log "no Charliecloud images: skipped"; return 0; }
    t0=$(now)
    out=$(as_user ch-run -b /tmp:/mnt --set-env=CONTPROBE_X=42 "$CH/base" -- \
          python3 -c 'import os, pytest; print(pytest.__version__, os.environ["CONTPROBE_X"], os.environ.get("CH_RUNNING"))')
    log "ch-run dir image: '$out' in $(since "$t0")s"
    t0=$(now)
    out=$(as_user ch-run "$CH/base.sqfs" -- python3 -c 'import pytest; print(pytest.__version__)')
    log "ch-run squashfs: '$out' in $(since "$t0")s"
}

# rootless podman keeps a "pause" process (holder of the user namespace) after its first call; stop
# it so that a verify leaves no process behind (podman starts a new one when next needed). It ignores
# SIGTERM, and its command line is podman's argv[0] (`podman` or `/usr/bin/podman`). A user with a
# container still running keeps it.
stop_pause() {
    local pf=$RUNDIR/libpod/tmp/pause.pid pid
    [ -s "$pf" ] || return 0
    pgrep -u "$UID_" conmon >/dev/null && return 0
    pid=$(cat "$pf")
    if [ -d "/proc/$pid" ] && [ "$(stat -c %U "/proc/$pid")" = "$CPUSER" ] \
        && [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" =~ ^((/usr/bin/)?podman|catatonit\ -P)\ $ ]]; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pf"
}

WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=(install verify)
for w in "${WANT[@]}"; do
    case $w in
        install) do_install ;;
        verify)  do_verify; stop_pause ;;
        *) sed -n '2,25p' "$0" >&2; exit 2 ;;
    esac
done
