#!/usr/bin/env bash
# Capture the verbatim output of real registry failures (and runtime mistakes) for contprobe's
# gotcha catalog. Prints Markdown on stdout; ERRORS.md and RUNTIMES.md were made from it.
#
# Usage (as root; the registry, proxy and stall server must be up: registry.sh up):
#   bash ci/services/registry/capture-errors.sh registry   > /tmp/registry-errors.md
#   bash ci/services/registry/capture-errors.sh runtimes   > /tmp/runtime-errors.md
# Every command runs as the unprivileged user ($CONTPROBE_USER, default cpuser) with a clean
# environment (env -i), from /, with a fresh APPTAINER_CACHEDIR, so outputs do not depend on the
# caller's shell. Cases with a hang are bounded by `timeout`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CPUSER=${CONTPROBE_USER:-cpuser}
IMAGES=${CONTPROBE_IMAGES:-/var/tmp/contprobe-images}
HOME_=$(getent passwd "$CPUSER" | cut -d: -f6)
UID_=$(id -u "$CPUSER")
# shellcheck disable=SC1090
eval "$(bash "$HERE/registry.sh" env)"
TMPD=/tmp/contprobe-errcap
rm -rf "$TMPD"; install -d -o "$CPUSER" -g "$CPUSER" "$TMPD"

BASE_ENV=("HOME=$HOME_" "USER=$CPUSER" "LOGNAME=$CPUSER" PATH=/usr/local/bin:/usr/bin:/bin
          "XDG_RUNTIME_DIR=/run/user/$UID_" LANG=C.UTF-8)

# run_case TITLE ENV-ASSIGNMENTS... -- CMD...: run as the user, print a Markdown section
run_case() {
    local title=$1; shift
    local -a envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    local cache="$TMPD/cache.$RANDOM"
    local -a full=(runuser -u "$CPUSER" -- env -i "${BASE_ENV[@]}" "APPTAINER_CACHEDIR=$cache" "${envs[@]}" "$@")
    local t0 t1 rc=0 out
    t0=$(date +%s.%N)
    out=$(cd / && "${full[@]}" 2>&1) || rc=$?
    t1=$(date +%s.%N)
    printf '### %s\n\n' "$title"
    printf 'Command (as %s, clean env): `' "$CPUSER"
    [ ${#envs[@]} -gt 0 ] && printf '%s ' "${envs[@]}"
    printf '%s' "$*"
    printf '`\n\nExit status %s after %.2f s:\n\n```\n%s\n```\n\n' "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$out"
}

CERTDIR=$CONTPROBE_REGISTRY_CERT_DIR
BUNDLE=$CONTPROBE_REGISTRY_BUNDLE
ALIAS=$CONTPROBE_REGISTRY_ALIAS
SYSB=/etc/ssl/certs/ca-certificates.crt

registry_cases() {
    printf '## Environment\n\n- registry: `%s` (alias `%s`), CA `%s`, bundle `%s`\n' "$REGISTRY" "$ALIAS" "$CONTPROBE_REGISTRY_CA" "$BUNDLE"
    printf -- '- refusing proxy: `%s`; stalled servers: `%s` (TCP), `%s` (TLS); nothing listens on `%s`\n' \
        "$CONTPROBE_REFUSING_PROXY" "$CONTPROBE_STALLED_REGISTRY" "$CONTPROBE_STALLED_TLS_REGISTRY" "$CONTPROBE_DOWN_REGISTRY"
    printf -- '- %s, %s, %s\n\n' "$(apptainer --version)" "$(podman --version)" "$(skopeo --version)"

    printf '## R1. CA not trusted\n\n'
    run_case "apptainer pull docker:// without the private CA (system bundle only)" "SSL_CERT_FILE=$SYSB" -- \
        apptainer pull "$TMPD/x.sif" "docker://$REGISTRY/base:1"
    run_case "apptainer pull docker:// with no SSL_CERT_FILE at all (a plain login shell)" -- \
        apptainer pull "$TMPD/x.sif" "docker://$REGISTRY/base:1"
    run_case "apptainer pull oras:// without the private CA" -- \
        apptainer pull "$TMPD/x.sif" "oras://$REGISTRY/base-sif:1"
    run_case "podman pull without --cert-dir" -- podman pull "docker://$REGISTRY/base:1"
    run_case "skopeo inspect without --cert-dir" -- skopeo inspect "docker://$REGISTRY/base:1"
    run_case "ch-image pull without REQUESTS_CA_BUNDLE" -- \
        ch-image --no-cache -s "$TMPD/ch" pull "$REGISTRY/base:1"
    printf '**Fixes, each checked to work:**\n\n'
    run_case "apptainer: SSL_CERT_FILE = system CAs + site CA" "SSL_CERT_FILE=$BUNDLE" -- \
        apptainer pull "$TMPD/ok.sif" "oras://$REGISTRY/base-sif:1"
    run_case "podman: --cert-dir DIR (DIR/ca.crt)" -- podman pull -q --cert-dir "$CERTDIR" "docker://$REGISTRY/base:1"
    run_case "ch-image: REQUESTS_CA_BUNDLE" "REQUESTS_CA_BUNDLE=$BUNDLE" -- \
        ch-image --no-cache -s "$TMPD/ch" pull "$REGISTRY/base:1"

    printf '## R2. Missing tag\n\n'
    run_case "apptainer pull docker:// missing tag" "SSL_CERT_FILE=$BUNDLE" -- \
        apptainer pull "$TMPD/x.sif" "docker://$REGISTRY/base:nope"
    run_case "apptainer pull oras:// missing tag" "SSL_CERT_FILE=$BUNDLE" -- \
        apptainer pull "$TMPD/x.sif" "oras://$REGISTRY/base-sif:nope"
    run_case "apptainer pull docker:// missing repository" "SSL_CERT_FILE=$BUNDLE" -- \
        apptainer pull "$TMPD/x.sif" "docker://$REGISTRY/nosuchimage:1"
    run_case "podman pull missing tag" -- podman pull --cert-dir "$CERTDIR" "docker://$REGISTRY/base:nope"

    printf '## R3. Registry down (nothing listens)\n\n'
    run_case "apptainer pull docker:// registry down" "SSL_CERT_FILE=$BUNDLE" -- \
        apptainer pull "$TMPD/x.sif" "docker://$CONTPROBE_DOWN_REGISTRY/base:1"
    run_case "apptainer pull oras:// registry down" "SSL_CERT_FILE=$BUNDLE" -- \
        apptainer pull "$TMPD/x.sif" "oras://$CONTPROBE_DOWN_REGISTRY/base-sif:1"
    run_case "podman pull registry down" -- podman pull "docker://$CONTPROBE_DOWN_REGISTRY/base:1"

    printf '## R4. Proxy refuses (squid answers CONNECT with 403)\n\n'
    run_case "apptainer pull docker:// via the refusing proxy (registry by hostname)" "SSL_CERT_FILE=$BUNDLE" \
        "https_proxy=$CONTPROBE_REFUSING_PROXY" -- apptainer pull "$TMPD/x.sif" "docker://$ALIAS/base:1"
    run_case "apptainer pull oras:// via the refusing proxy" "SSL_CERT_FILE=$BUNDLE" \
        "https_proxy=$CONTPROBE_REFUSING_PROXY" -- apptainer pull "$TMPD/x.sif" "oras://$ALIAS/base-sif:1"
    run_case "podman pull via the refusing proxy" "https_proxy=$CONTPROBE_REFUSING_PROXY" -- \
        podman pull --cert-dir "$CONTPROBE_REGISTRY_CERTS_D/$ALIAS" "docker://$ALIAS/base:1"
    run_case "same proxy, registry as 127.0.0.1: Go skips the proxy for loopback, so it works" "SSL_CERT_FILE=$BUNDLE" \
        "https_proxy=$CONTPROBE_REFUSING_PROXY" -- apptainer pull "$TMPD/y.sif" "oras://$REGISTRY/base-sif:1"
    run_case "fix: no_proxy names the registry" "SSL_CERT_FILE=$BUNDLE" "https_proxy=$CONTPROBE_REFUSING_PROXY" \
        "no_proxy=$(echo "$ALIAS" | cut -d: -f1)" -- apptainer pull "$TMPD/z.sif" "oras://$ALIAS/base-sif:1"

    printf '## R5. Stalled registry (accepts TCP, never answers)\n\n'
    run_case "apptainer pull docker:// from a stalled registry (bounded by timeout 90)" "SSL_CERT_FILE=$BUNDLE" -- \
        timeout 90 apptainer pull "$TMPD/x.sif" "docker://$CONTPROBE_STALLED_REGISTRY/base:1"
    run_case "apptainer pull oras:// from a stalled registry (bounded by timeout 90)" "SSL_CERT_FILE=$BUNDLE" -- \
        timeout 90 apptainer pull "$TMPD/x.sif" "oras://$CONTPROBE_STALLED_REGISTRY/base-sif:1"
    run_case "podman pull from a stalled registry (bounded by timeout 90)" -- \
        timeout 90 podman pull "docker://$CONTPROBE_STALLED_REGISTRY/base:1"

    printf '## R6. Stalled registry behind TLS (handshake completes, HTTP never answered)\n\n'
    run_case "apptainer pull docker:// (bounded by timeout 30)" "SSL_CERT_FILE=$BUNDLE" -- \
        timeout 30 apptainer pull "$TMPD/x.sif" "docker://$CONTPROBE_STALLED_TLS_REGISTRY/base:1"
    run_case "apptainer pull oras:// (bounded by timeout 30)" "SSL_CERT_FILE=$BUNDLE" -- \
        timeout 30 apptainer pull "$TMPD/x.sif" "oras://$CONTPROBE_STALLED_TLS_REGISTRY/base-sif:1"
    run_case "podman pull (bounded by timeout 30)" -- \
        timeout 30 podman pull --cert-dir "$CERTDIR" "docker://$CONTPROBE_STALLED_TLS_REGISTRY/base:1"
}

runtime_cases() {
    local ch=$IMAGES/ch/base
    printf '## Runtime mistakes\n\n'
    run_case "ch-run with \$USER unset" -- env -u USER ch-run "$ch" -- true
    run_case "ch-run bind onto a path missing in the image" -- ch-run -b /tmp:/no/such/dir "$ch" -- true
    run_case "ch-run bind onto a path missing in the image, squashfs image" -- \
        ch-run -b /tmp:/no/such/dir "$IMAGES/ch/base.sqfs" -- true
    run_case "ch-run bind source missing on the host" -- ch-run -b /no/such/src:/mnt "$ch" -- true
    run_case "ch-run on a SIF file" -- ch-run "$IMAGES/base.sif" -- true
    # works (rc 0) while /run/user/UID exists: podman picks it by itself. Without it, podman falls
    # back to /tmp/podman-run-UID silently (and keeps its first choice in its database)
    local had_tmp=0; [ -e "/tmp/containers-user-$UID_" ] && had_tmp=1
    run_case "podman with XDG_RUNTIME_DIR unset" -- env -u XDG_RUNTIME_DIR podman run --rm "$REGISTRY/base:1" true
    run_case "podman with XDG_RUNTIME_DIR pointing to a missing dir" XDG_RUNTIME_DIR=/run/user/nonexistent -- \
        podman run --rm "$REGISTRY/base:1" true
    # both cases leave podman's fallback tmp dir behind
    # (podman's exit-command cleanup runs asynchronously after `run --rm` returns)
    sleep 1; [ $had_tmp = 1 ] || rm -rf "/tmp/containers-user-$UID_"
}

# rootless podman for a user with no /etc/subuid range: `nobody` has none (no user is created)
nosubuid_case() {
    local h="$TMPD/nobody-home" r="$TMPD/nobody-run"
    install -d -o nobody -g nogroup -m 700 "$h" "$r"
    local -a full=(runuser -u nobody -- env -i "HOME=$h" USER=nobody PATH=/usr/bin:/bin "XDG_RUNTIME_DIR=$r"
                   podman pull --cert-dir "$CERTDIR" "docker://$REGISTRY/base:1")
    local rc=0 out
    out=$(cd / && "${full[@]}" 2>&1) || rc=$?
    printf '### rootless podman for a user without a subuid/subgid range

'
    printf 'Command (as nobody, no line in /etc/subuid): `podman pull --cert-dir %s docker://%s/base:1`

' "$CERTDIR" "$REGISTRY"
    printf 'Exit status %s:

```
%s
```

' "$rc" "$out"
    runuser -u nobody -- env -i "HOME=$h" "XDG_RUNTIME_DIR=$r" PATH=/usr/bin:/bin podman system reset --force >/dev/null 2>&1 || true
}

# podman's rootless "pause" process outlives the calls above; stop the one of $CPUSER (by its pidfile)
stop_pause() {
    local pf=/run/user/$UID_/libpod/tmp/pause.pid pid
    [ -s "$pf" ] || return 0
    pid=$(cat "$pf")
    if [ -d "/proc/$pid" ] && [ "$(stat -c %U "/proc/$pid")" = "$CPUSER" ] \
        && [ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" = "podman " ]; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$pf"
}

case ${1:-} in
    registry) registry_cases ;;
    runtimes) runtime_cases; nosubuid_case ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
stop_pause
rm -rf "$TMPD"
