#!/usr/bin/env bash
# Install the real Apptainer (Debian unstable's package) on a Debian 12 machine, for CI.
#
# Debian 12 has no apptainer package; unstable's needs glibc >= 2.38 (bookworm has 2.36).
# So: unpack unstable's apptainer .deb with dpkg -x, unpack unstable's libc6 into a private
# directory and point apptainer's binaries at it with patchelf. The system's libc is not touched,
# and unstable is never added to the system's apt sources (a private apt state dir is used).
#
# Also: an unprivileged user `cpuser` with a 65536 subuid/subgid range (root on the CI machine
# lacks CAP_SYS_RESOURCE, so `apptainer exec` as root fails), /dev/fuse usable by that user,
# and the Debian packages needed to build the test images (debootstrap, mpich on the host).
#
# Usage: bash ci/provision/apptainer.sh        (as root; idempotent, a second run takes seconds)
# Env:   CONTPROBE_USER (default cpuser), CONTPROBE_APT_MIRROR (default: the system's Debian URI)
set -euo pipefail

log() { printf '[install-apptainer] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

CPUSER=${CONTPROBE_USER:-cpuser}
MULTIARCH=x86_64-linux-gnu
APPT_LIBDIR=/usr/lib/$MULTIARCH/apptainer
GLIBC_DIR=$APPT_LIBDIR/glibc          # private glibc from unstable (must be under /usr/lib, not /opt)
PRIV=/var/cache/contprobe-apt         # private apt state for unstable (lists + .debs)
STAMP=$APPT_LIBDIR/.contprobe-installed
T0=$(date +%s)

export DEBIAN_FRONTEND=noninteractive
# one install at a time
exec 9>/var/lock/contprobe-install-apptainer.lock
flock -w 900 9 || die "another install holds /var/lock/contprobe-install-apptainer.lock"

# --- 1. Debian 12 packages ------------------------------------------------------------------
HOST_PKGS=(squashfs-tools squashfuse fuse2fs uidmap patchelf debootstrap ca-certificates mpich)
missing=()
for p in "${HOST_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" >/dev/null
else
    log "Debian packages already installed: ${HOST_PKGS[*]}"
fi

# --- 2. apptainer + libc6 from unstable, unpacked privately -----------------------------------
# shellcheck source=../lib/apt-mirror.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt-mirror.sh"

# bump when the way of installing changes: an older install is then redone
INSTALL_REV=2
if [ -f "$STAMP" ] && grep -q " rev=$INSTALL_REV\$" "$STAMP" && [ -x /usr/bin/apptainer ] \
        && /usr/bin/apptainer --version >/dev/null 2>&1; then
    log "apptainer already installed: $(/usr/bin/apptainer --version) ($(cat "$STAMP"))"
else
    MIRROR=$(mirror_uri)
    log "fetching apptainer + libc6 from Debian unstable via $MIRROR (private apt dir $PRIV)"
    mkdir -p "$PRIV/lists/partial" "$PRIV/archives/partial" "$PRIV/etc/preferences.d"
    cat >"$PRIV/etc/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR unstable main
EOF
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$PRIV/etc/sources.list"
        -o "Dir::Etc::SourceParts=-"
        -o "Dir::Etc::Preferences=$PRIV/etc/preferences"
        -o "Dir::Etc::PreferencesParts=$PRIV/etc/preferences.d"
        -o "Dir::State::Lists=$PRIV/lists"
        -o "Dir::Cache=$PRIV"
        -o "Dir::Cache::archives=$PRIV/archives"
        -o "APT::Get::List-Cleanup=0"
        -o "Acquire::Languages=none"
        -o "APT::Sandbox::User=root"
        -o "Acquire::Check-Valid-Until=false"
    )
    apt-get "${APT_OPTS[@]}" update -qq
    ( cd "$PRIV/archives" && rm -f apptainer_*.deb libc6_*.deb \
        && apt-get "${APT_OPTS[@]}" download apptainer libc6 >/dev/null )
    APPT_DEB=$(ls "$PRIV"/archives/apptainer_*.deb | head -n1)
    LIBC_DEB=$(ls "$PRIV"/archives/libc6_*.deb | head -n1)
    log "downloaded $(basename "$APPT_DEB") $(basename "$LIBC_DEB")"

    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    dpkg -x "$APPT_DEB" "$WORK/appt"
    dpkg -x "$LIBC_DEB" "$WORK/libc"

    # apptainer's files: binaries, libexec, config, bash completion. Keep an existing config.
    log "unpacking apptainer into /"
    if [ -d /etc/apptainer ]; then
        cp -an "$WORK/appt/etc/apptainer/." /etc/apptainer/
        rm -rf "$WORK/appt/etc/apptainer"
    fi
    # tar with --no-overwrite-dir: never change the metadata of existing dirs such as / or /usr
    tar -C "$WORK/appt" -cf - . | tar -C / -xf - --no-overwrite-dir

    # private glibc
    log "unpacking unstable's libc6 into $GLIBC_DIR"
    rm -rf "$GLIBC_DIR.new"; mkdir -p "$GLIBC_DIR.new"
    for d in "$WORK/libc/usr/lib/$MULTIARCH" "$WORK/libc/lib/$MULTIARCH"; do
        if [ -d "$d" ]; then cp -a "$d/." "$GLIBC_DIR.new/"; fi
    done
    [ -e "$GLIBC_DIR.new/ld-linux-x86-64.so.2" ] || die "ld-linux-x86-64.so.2 not found in $LIBC_DEB"
    rm -rf "$GLIBC_DIR.new/gconv"     # iconv modules: not needed by apptainer
    rm -rf "$GLIBC_DIR"; mv "$GLIBC_DIR.new" "$GLIBC_DIR"

    # patch the ELF binaries that run with the new glibc
    patched=()
    for f in /usr/bin/apptainer "$APPT_LIBDIR"/bin/* "$APPT_LIBDIR"/libexec/*; do
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        head -c4 "$f" | grep -q 'ELF' || continue
        # only dynamically linked executables have an interpreter
        patchelf --print-interpreter "$f" >/dev/null 2>&1 || continue
        # --force-rpath writes DT_RPATH (not DT_RUNPATH): DT_RPATH wins over LD_LIBRARY_PATH, and
        # apptainer sets LD_LIBRARY_PATH=/lib/x86_64-linux-gnu when it re-runs itself to unpack a SIF
        # (unprivileged SIF extraction, e.g. `build --fakeroot` from a SIF base); with DT_RUNPATH that
        # run loads bookworm's libc: "version `GLIBC_2.38' not found (required by /usr/bin/apptainer)"
        # (patch a copy and rename it: the binary may be running)
        cp -a "$f" "$f.contprobe-new"
        patchelf --set-interpreter "$GLIBC_DIR/ld-linux-x86-64.so.2" \
                 --force-rpath --set-rpath "$GLIBC_DIR:/lib/$MULTIARCH" "$f.contprobe-new"
        mv -f "$f.contprobe-new" "$f"
        patched+=("$f")
    done
    log "patched: ${patched[*]}"
    mkdir -p /var/lib/apptainer/mnt/session
    rm -rf "$PRIV/lists"    # 40+ MB of unstable indexes, not needed once installed
    echo "$(basename "$APPT_DEB") $(basename "$LIBC_DEB") rev=$INSTALL_REV" >"$STAMP"
    log "installed $(/usr/bin/apptainer --version)"
fi
mkdir -p /var/lib/apptainer/mnt/session

# --- 3. unprivileged user, subordinate ids, /dev/fuse -------------------------------------------
if ! id "$CPUSER" >/dev/null 2>&1; then
    log "creating user $CPUSER"
    useradd -m -d "/home/$CPUSER" -s /bin/bash "$CPUSER"
fi
for f in /etc/subuid /etc/subgid; do
    touch "$f"
    if ! grep -q "^$CPUSER:" "$f"; then
        # next free range after the highest existing one (default start 100000)
        start=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' "$f")
        echo "$CPUSER:$start:65536" >>"$f"
        log "added $CPUSER:$start:65536 to $f"
    fi
done
if [ -e /dev/fuse ]; then
    chmod 666 /dev/fuse
else
    log "WARNING: /dev/fuse missing (squashfuse mounts of SIF images will not work)"
fi

# --- 4. verify ---------------------------------------------------------------------------------
log "verify: runuser -u $CPUSER -- apptainer --version"
runuser -u "$CPUSER" -- apptainer --version
VDIR=/var/tmp/contprobe-verify
if [ ! -f "$VDIR/tiny.sif" ]; then
    log "verify: building a tiny image ($VDIR/tiny.sif) from the host's busybox/sh"
    rm -rf "$VDIR"; mkdir -p "$VDIR/root/bin" "$VDIR/root/lib64" "$VDIR/root/lib/$MULTIARCH" \
        "$VDIR/root/etc" "$VDIR/root/tmp" "$VDIR/root/dev" "$VDIR/root/proc" "$VDIR/root/sys"
    cp /bin/dash "$VDIR/root/bin/sh"
    for l in $(ldd /bin/dash | grep -oE '/[^ ]+' ); do cp -L "$l" "$VDIR/root$l"; done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$VDIR/root/etc/passwd"
    printf 'root:x:0:\n' >"$VDIR/root/etc/group"
    apptainer -q build "$VDIR/tiny.sif" "$VDIR/root" >/dev/null
    rm -rf "$VDIR/root"
    chmod -R a+rX "$VDIR"
fi
out=$(cd / && runuser -u "$CPUSER" -- apptainer -s exec "$VDIR/tiny.sif" /bin/sh -c 'echo contprobe-ok')
[ "$out" = contprobe-ok ] || die "apptainer exec of $VDIR/tiny.sif printed: $out"
log "verify: apptainer exec as $CPUSER works"
log "done in $(( $(date +%s) - T0 ))s"
