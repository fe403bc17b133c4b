#!/usr/bin/env bash
# A private OCI registry on loopback, with its own CA, for contprobe's docker:// and oras:// tests;
# plus a proxy that refuses CONNECT (the "proxy 403" gotcha) and two registries that never answer
# (conversion timeouts). Docs and timings: ci/services/registry/README.md; real error texts: ERRORS.md.
#
# Usage (as root):  bash ci/services/registry/registry.sh COMMAND
#   up          CA + certs, start docker-registry (TLS, 127.0.0.1:PORT), push the test images,
#               start the refusing proxy and the stalled servers. Idempotent (fresh ~5 s, re-run ~0.2 s).
#   down        stop every daemon this script started (registry, proxy, stall, stall-tls); data is kept
#   status      what runs (exit 0 when the registry answers, 3 otherwise)
#   env         shell assignments a test needs:  eval "$(bash ci/services/registry/registry.sh env)"
#   push [--all] (re)push the test images only (registry must be up)
#   registry-up | registry-down | proxy-up | proxy-down | stall-up | stall-down
#   clean       down + remove the state dir (CA, certs, pushed blobs)
#
# Images pushed (from $CONTPROBE_IMAGES, built by ci/provision/test-images.sh; rootfs/ and base.sif needed):
#   127.0.0.1:PORT/base:1      OCI image: a tar of rootfs/ via `skopeo copy tarball:` (no config:
#                              no Env/Cmd; runtimes supply a default PATH)
#   127.0.0.1:PORT/base-sif:1  base.sif via `apptainer push oras://` (as $CONTPROBE_USER)
#   with CONTPROBE_REGISTRY_ALL=1 also py39:1, py313:1 (OCI, from py39-rootfs/, py313-rootfs/) and
#   NAME-sif:1 for nopytest mpich openmpi py39 py39-nopytest py313 py313-nopytest (those that exist)
#
# Env: CONTPROBE_REGISTRY_DIR   state dir (default /var/tmp/contprobe-registry)
#      CONTPROBE_REGISTRY_PORT  registry port (default 5443)
#      CONTPROBE_PROXY_PORT     refusing squid (default 5480)
#      CONTPROBE_STALL_PORT     stalled server, TCP only (default 5444)
#      CONTPROBE_STALL_TLS_PORT stalled server that completes TLS, then never answers (default 5446)
#      CONTPROBE_IMAGES         image cache (default /var/tmp/contprobe-images)
#      CONTPROBE_USER           unprivileged user for apptainer (default cpuser)
#      CONTPROBE_REPUSH=1       push again even when the registry has the same image
#      CONTPROBE_REGISTRY_ALL=1 also push py39:1, py313:1 (OCI) and every other SIF as NAME-sif:1
#
# Network: only 127.0.0.1 is used. Every daemon is tracked by a pidfile in the state dir, and
# `down` kills exactly those pids.
set -euo pipefail

DIR=${CONTPROBE_REGISTRY_DIR:-/var/tmp/contprobe-registry}
PORT=${CONTPROBE_REGISTRY_PORT:-5443}
PROXY_PORT=${CONTPROBE_PROXY_PORT:-5480}
STALL_PORT=${CONTPROBE_STALL_PORT:-5444}
STALL_TLS_PORT=${CONTPROBE_STALL_TLS_PORT:-5446}
IMAGES=${CONTPROBE_IMAGES:-/var/tmp/contprobe-images}
CPUSER=${CONTPROBE_USER:-cpuser}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REG=127.0.0.1:$PORT
# Go (apptainer, skopeo, podman) never sends requests for "localhost" or a literal loopback IP
# through $https_proxy. The machine's hostname resolves to 127.0.0.1 too, but is not special-cased,
# so proxy tests address the registry by hostname; the server certificate names it as well.
HOST_ALIAS=$(hostname)
SYS_BUNDLE=/etc/ssl/certs/ca-certificates.crt
PY=/usr/bin/python3   # the system python: root's PATH may point at a pyenv shim

log() { printf '[registry] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------- daemons by pidfile ---------------------------------------------------------------------

# alive PIDFILE NAME: the pid in PIDFILE runs and its command line mentions NAME (guards against a
# recycled pid after a reboot or a crash)
alive() {
    local pf=$1 name=$2 pid
    pid=$(cat "$pf" 2>/dev/null) || return 1     # removed between a test and the read: not alive
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

# start_daemon PIDFILE LOG NAME CMD...: run CMD in its own session, in the background, pid -> PIDFILE
start_daemon() {
    local pf=$1 lf=$2 name=$3; shift 3
    if alive "$pf" "$name"; then return 0; fi
    rm -f "$pf"
    setsid "$@" >>"$lf" 2>&1 </dev/null &
    echo $! >"$pf"
}

# running PID: the process exists and has not exited; a zombie waiting for init to reap it (its
# parent, an earlier `up`, is gone) counts as stopped, or `down` would wait seconds for the reaper
running() { [ -d "/proc/$1" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]; }

# stop_daemon PIDFILE NAME: TERM, wait up to 10 s, then KILL; only that pid
stop_daemon() {
    local pf=$1 name=$2 pid kids k
    if alive "$pf" "$name"; then
        pid=$(cat "$pf")
        # helpers it forked (squid's pinger, for one, runs in its own session and would outlive it)
        kids=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do running "$pid" || break; sleep 0.2; done
        if running "$pid"; then log "$name ($pid) ignored TERM, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
        # reap: it was started by an earlier shell, so only wait for /proc to clear
        for _ in $(seq 1 25); do running "$pid" || break; sleep 0.2; done
        for k in $kids; do kill -TERM "$k" 2>/dev/null || true; done
        log "$name stopped (pid $pid)"
    fi
    rm -f "$pf"
}

# port_open PORT: something listens on 127.0.0.1:PORT (bash's /dev/tcp; no extra tools)
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # PORT PIDFILE NAME LOG: 0 listening, 1 exited during start
    for _ in $(seq 1 100); do
        port_open "$1" && return 0
        alive "$2" "$3" || return 1
        sleep 0.1
    done
    tail -20 "$4" >&2; die "$3 does not listen on 127.0.0.1:$1 after 10 s (log: $4)"
}

# serve PORT PIDFILE LOG NAME CMD...: start a daemon and wait until it listens and is still there a
# second later. Inside whole test-suite runs (never alone) a daemon was sometimes ended by a signal
# right after it started, by a sender not yet found (squid: "Preparing for shutdown after 0
# requests"); such a start is tried again, up to 3 times, and said in the log.
serve() {
    local port=$1 pf=$2 lf=$3 name=$4 attempt; shift 4
    for attempt in 1 2 3; do
        start_daemon "$pf" "$lf" "$name" "$@"
        # still there and still listening: squid on SIGTERM closes its port at once, exits seconds later
        if wait_port "$port" "$pf" "$name" "$lf" && sleep 1 && alive "$pf" "$name" && port_open "$port"; then
            return 0
        fi
        log "$name ended right after it started (attempt $attempt; log: $lf)"
        stop_daemon "$pf" "$name"
    done
    tail -20 "$lf" >&2; die "$name exited during start, 3 times (log: $lf)"
}

# ---------- CA and certificates --------------------------------------------------------------------

make_certs() {
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    local san="IP:127.0.0.1,DNS:localhost,DNS:$HOST_ALIAS"
    if [ ! -s "$DIR/ca.crt" ] || [ ! -s "$DIR/ca.key" ]; then
        log "making a private CA in $DIR/ca.crt"
        local -a ca=(openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650
                     -subj "/O=contprobe CI/CN=contprobe test registry CA"
                     -addext "basicConstraints=critical,CA:TRUE"
                     -addext "keyUsage=critical,keyCertSign,cRLSign"
                     -keyout "$DIR/ca.key" -out "$DIR/ca.crt")
        "${ca[@]}" 2>/dev/null
        rm -f "$DIR/server.crt"   # a new CA invalidates the old server certificate
    fi
    # the server certificate is remade when the names it must carry change (e.g. another hostname)
    if [ ! -s "$DIR/server.crt" ] || [ "$(cat "$DIR/server.san" 2>/dev/null)" != "$san" ]; then
        log "making the server certificate (subjectAltName $san)"
        printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
            "$san" >"$DIR/server.ext"
        local -a csr=(openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/O=contprobe CI/CN=127.0.0.1"
                      -keyout "$DIR/server.key" -out "$DIR/server.csr")
        local -a sign=(openssl x509 -req -sha256 -days 825 -in "$DIR/server.csr" -CA "$DIR/ca.crt"
                       -CAkey "$DIR/ca.key" -CAcreateserial -extfile "$DIR/server.ext" -out "$DIR/server.crt")
        "${csr[@]}" 2>/dev/null
        "${sign[@]}" 2>/dev/null
        echo "$san" >"$DIR/server.san"
        rm -f "$DIR/server.csr"
    fi
    chmod 600 "$DIR/ca.key" "$DIR/server.key"
    chmod 644 "$DIR/ca.crt" "$DIR/server.crt"
    # Apptainer trusts a private CA only via SSL_CERT_FILE/SSL_CERT_DIR, which *replace* the system
    # store: a bundle with both keeps other HTTPS (the proxy's CA for the outside) working
    cat "$SYS_BUNDLE" "$DIR/ca.crt" >"$DIR/bundle.crt.tmp"
    mv -f "$DIR/bundle.crt.tmp" "$DIR/bundle.crt"
    chmod 644 "$DIR/bundle.crt"
    # containers/image (skopeo --*-cert-dir, podman --cert-dir, /etc/containers/certs.d) wants a
    # directory per host:port with the CA in a *.crt file
    local h
    for h in "127.0.0.1:$PORT" "localhost:$PORT" "$HOST_ALIAS:$PORT"; do
        mkdir -p "$DIR/certs.d/$h"
        cp "$DIR/ca.crt" "$DIR/certs.d/$h/ca.crt"
    done
    chmod -R a+rX "$DIR/certs.d"
}

# ---------- the registry ----------------------------------------------------------------------------

write_registry_config() {
    mkdir -p "$DIR/data"
    # no auth (tests pull anonymously); delete enabled so tests may remove a tag
    cat >"$DIR/config.yml" <<EOF
version: 0.1
log:
  level: info
  fields:
    service: contprobe-registry
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
  tls:
    certificate: $DIR/server.crt
    key: $DIR/server.key
EOF
}

registry_up() {
    command -v docker-registry >/dev/null || die "docker-registry missing: apt-get install docker-registry"
    make_certs
    write_registry_config
    if ! alive "$DIR/registry.pid" docker-registry && port_open "$PORT"; then
        die "127.0.0.1:$PORT is taken by a process this script did not start"
    fi
    local -a cmd=(docker-registry serve "$DIR/config.yml")
    serve "$PORT" "$DIR/registry.pid" "$DIR/registry.log" docker-registry "${cmd[@]}"
    curl -sf --cacert "$DIR/ca.crt" "https://$REG/v2/" >/dev/null || die "registry does not answer /v2/ over TLS"
    log "registry up: https://$REG (pid $(cat "$DIR/registry.pid"))"
}

# manifest_digest REPO TAG: the registry's digest of a manifest, empty when the tag is missing
manifest_digest() {
    local -a c=(curl -sfI --cacert "$DIR/ca.crt"
                -H 'Accept: application/vnd.oci.image.manifest.v1+json'
                -H 'Accept: application/vnd.docker.distribution.manifest.v2+json'
                "https://$REG/v2/$1/manifests/$2")
    "${c[@]}" 2>/dev/null | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:" {print $2}' || true
}

# push only when the registry lacks the tag or the source image changed since the last push
needs_push() {  # NAME SOURCE_HASH REPO TAG
    [ "${CONTPROBE_REPUSH:-0}" = 1 ] && return 0
    [ "$(cat "$DIR/pushed/$1" 2>/dev/null)" = "$2" ] || return 0
    [ -n "$(manifest_digest "$3" "$4")" ] || return 0
    return 1
}

push_oci() {  # REPO ROOTFS-DIR-NAME: a rootfs sandbox in $IMAGES as docker://$REG/REPO:1
    local repo=$1 root=$IMAGES/$2
    [ -d "$root" ] || die "$root missing: run ci/provision/test-images.sh / ci/provision/py-range-images.sh"
    local stamp=$root.recipe-sha256
    local src; src=$(cat "$stamp" 2>/dev/null || echo unknown)-oci-v1
    if ! needs_push "$repo" "$src" "$repo" 1; then log "$repo:1 up to date in the registry"; return; fi
    local t0; t0=$(date +%s)
    mkdir -p "$DIR/work" "$DIR/pushed"
    # a reproducible layer: sorted names, numeric owners, no gzip timestamp; file mtimes are the
    # rootfs's own. Same rootfs -> same layer digest -> same manifest digest.
    local tarball="$DIR/work/$repo-rootfs.tar.gz"
    tar -C "$root" --numeric-owner --sort=name -cf - . | gzip -n -1 >"$tarball.tmp"
    mv -f "$tarball.tmp" "$tarball"
    # skopeo's tarball: transport writes the file's mtime as the image's "created" date: pin it to
    # when the rootfs was built, so a re-push of the same rootfs gives the same manifest digest
    if [ -f "$stamp" ]; then touch -r "$stamp" "$tarball"; else touch -d @0 "$tarball"; fi
    # tarball: -> a local OCI layout (kept: `podman pull oci:`/offline tests can use it)
    # -> the registry, trusting the private CA through a containers-style cert dir
    rm -rf "${DIR:?}/oci/$repo"; mkdir -p "$DIR/oci"
    local -a to_oci=(skopeo copy --quiet "tarball:$tarball" "oci:$DIR/oci/$repo:1")
    local -a to_reg=(skopeo copy --quiet --dest-cert-dir "$DIR/certs.d/$REG" "oci:$DIR/oci/$repo:1" "docker://$REG/$repo:1")
    "${to_oci[@]}"
    "${to_reg[@]}"
    chmod -R a+rX "$DIR/oci"
    rm -f "$tarball"
    echo "$src" >"$DIR/pushed/$repo"
    log "pushed docker://$REG/$repo:1 ($(manifest_digest "$repo" 1)) in $(( $(date +%s) - t0 ))s"
}

push_sif() {  # NAME: $IMAGES/NAME.sif as oras://$REG/NAME-sif:1
    local name=$1 sif=$IMAGES/$1.sif repo=$1-sif
    [ -f "$sif" ] || die "$sif missing: run ci/provision/test-images.sh / ci/provision/py-range-images.sh"
    local src; src=$(cat "$sif.recipe-sha256" 2>/dev/null || sha256sum <"$sif" | cut -c1-64)-sif-v1
    if ! needs_push "$repo" "$src" "$repo" 1; then log "$repo:1 up to date in the registry"; return; fi
    local t0; t0=$(date +%s)
    mkdir -p "$DIR/pushed"
    # root cannot run apptainer's starter here, and users push as themselves: run as $CPUSER with a
    # clean environment; SSL_CERT_FILE is the only way apptainer trusts the private CA
    local -a cmd=(runuser -u "$CPUSER" -- env -i "HOME=$(getent passwd "$CPUSER" | cut -d: -f6)"
                  "USER=$CPUSER" PATH=/usr/local/bin:/usr/bin:/bin "SSL_CERT_FILE=$DIR/bundle.crt"
                  apptainer -s push "$sif" "oras://$REG/$repo:1")
    (cd / && "${cmd[@]}") >&2
    echo "$src" >"$DIR/pushed/$repo"
    log "pushed oras://$REG/$repo:1 ($(manifest_digest "$repo" 1)) in $(( $(date +%s) - t0 ))s"
}

# base always; with CONTPROBE_REGISTRY_ALL=1 (or `push --all`) every other test image that exists:
# py39:1 / py313:1 as OCI images, and each SIF as NAME-sif:1
push_all() {
    curl -sf --cacert "$DIR/ca.crt" "https://$REG/v2/" >/dev/null || die "registry is not up: registry.sh up"
    push_oci base rootfs
    push_sif base
    [ "${CONTPROBE_REGISTRY_ALL:-0}" = 1 ] || return 0
    local n
    for n in py39 py313; do [ -d "$IMAGES/$n-rootfs" ] && push_oci "$n" "$n-rootfs"; done
    for n in nopytest mpich openmpi py39 py39-nopytest py313 py313-nopytest; do
        [ -f "$IMAGES/$n.sif" ] && push_sif "$n"
    done
    return 0
}

registry_down() { stop_daemon "$DIR/registry.pid" docker-registry; }

# ---------- the refusing proxy (squid) ----------------------------------------------------------------

proxy_up() {
    command -v squid >/dev/null || die "squid missing: apt-get install squid"
    mkdir -p "$DIR/squid"
    chown proxy:proxy "$DIR/squid"   # squid drops to user proxy before it opens its logs
    # Deny every CONNECT (HTTPS tunnel) with 403, the way a site proxy refuses a registry it does not
    # allow. Only loopback exists here, so there is nothing else to allow. No disk cache.
    cat >"$DIR/squid.conf" <<EOF
http_port 127.0.0.1:$PROXY_PORT
acl CONNECT method CONNECT
http_access deny CONNECT
http_access deny all
cache deny all
pid_filename none
cache_log $DIR/squid/cache.log
access_log stdio:$DIR/squid/access.log
coredump_dir $DIR/squid
cache_effective_user proxy
visible_hostname contprobe-refusing-proxy
shutdown_lifetime 1 seconds
# no ICMP helper process: nothing to measure, and one process less to track
pinger_enable off
EOF
    if ! alive "$DIR/squid.pid" squid && port_open "$PROXY_PORT"; then
        die "127.0.0.1:$PROXY_PORT is taken by a process this script did not start"
    fi
    # -N: no daemonizing and no worker kids, so the pid we record is the one that serves
    local -a cmd=(squid -N -f "$DIR/squid.conf")
    serve "$PROXY_PORT" "$DIR/squid.pid" "$DIR/squid.log" squid "${cmd[@]}"
    log "refusing proxy up: http://127.0.0.1:$PROXY_PORT (pid $(cat "$DIR/squid.pid"))"
}

proxy_down() { stop_daemon "$DIR/squid.pid" squid; }

# ---------- the stalled registry ----------------------------------------------------------------------

# two flavours: TCP accepted but TLS never answered (Go clients time out the handshake after 10 s,
# oras:// waits forever), and TLS completed with the registry's certificate but HTTP never answered
# (nothing on the client side times out: only the caller's own timeout ends the pull)
stall_up() {
    make_certs
    local name port pf
    for name in stall stall-tls; do
        if [ $name = stall ]; then port=$STALL_PORT; else port=$STALL_TLS_PORT; fi
        pf=$DIR/$name.pid
        if ! alive "$pf" stall-server && port_open "$port"; then
            die "127.0.0.1:$port is taken by a process this script did not start"
        fi
        local -a cmd=("$PY" -u "$HERE/stall-server.py" "$port")
        [ $name = stall-tls ] && cmd+=(--tls "$DIR/server.crt" "$DIR/server.key")
        serve "$port" "$pf" "$DIR/$name.log" stall-server "${cmd[@]}"
    done
    log "stalled servers up: 127.0.0.1:$STALL_PORT (TCP only, pid $(cat "$DIR/stall.pid")), 127.0.0.1:$STALL_TLS_PORT (TLS, then silence, pid $(cat "$DIR/stall-tls.pid"))"
}

stall_down() { stop_daemon "$DIR/stall.pid" stall-server; stop_daemon "$DIR/stall-tls.pid" stall-server; }

# ---------- status / env -----------------------------------------------------------------------------

status() {
    local rc=0 n pf name port
    for n in registry:docker-registry:$PORT squid:squid:$PROXY_PORT stall:stall-server:$STALL_PORT \
             stall-tls:stall-server:$STALL_TLS_PORT; do
        IFS=: read -r pf name port <<<"$n"
        if alive "$DIR/$pf.pid" "$name"; then
            printf '%-10s up    pid %-7s 127.0.0.1:%s\n' "$pf" "$(cat "$DIR/$pf.pid")" "$port"
        else
            printf '%-10s down\n' "$pf"
            [ "$pf" = registry ] && rc=3
        fi
    done
    if [ $rc = 0 ]; then
        printf 'base:1     %s\nbase-sif:1 %s\n' "$(manifest_digest base 1)" "$(manifest_digest base-sif 1)"
    fi
    return $rc
}

print_env() {
    # plain KEY=VALUE lines, usable with eval, `set -a; source`, or a CI env file
    cat <<EOF
REGISTRY=$REG
CONTPROBE_REGISTRY=$REG
CONTPROBE_REGISTRY_ALIAS=$HOST_ALIAS:$PORT
CONTPROBE_REGISTRY_CA=$DIR/ca.crt
CONTPROBE_REGISTRY_BUNDLE=$DIR/bundle.crt
CONTPROBE_REGISTRY_CERT_DIR=$DIR/certs.d/$REG
CONTPROBE_REGISTRY_CERTS_D=$DIR/certs.d
CONTPROBE_REGISTRY_DOCKER_REF=docker://$REG/base:1
CONTPROBE_REGISTRY_ORAS_REF=oras://$REG/base-sif:1
CONTPROBE_REGISTRY_OCI_LAYOUT=$DIR/oci/base:1
CONTPROBE_REGISTRY_BASE_DIGEST=$(manifest_digest base 1)
CONTPROBE_REGISTRY_BASE_SIF_DIGEST=$(manifest_digest base-sif 1)
CONTPROBE_REFUSING_PROXY=http://127.0.0.1:$PROXY_PORT
CONTPROBE_STALLED_REGISTRY=127.0.0.1:$STALL_PORT
CONTPROBE_STALLED_TLS_REGISTRY=127.0.0.1:$STALL_TLS_PORT
CONTPROBE_DOWN_REGISTRY=127.0.0.1:$((PORT + 2))
EOF
}

# ---------- main ---------------------------------------------------------------------------------------

action=${1:-}
case $action in
    up)
        [ "$(id -u)" = 0 ] || die "run as root"
        registry_up; push_all; proxy_up; stall_up ;;
    down)          registry_down; proxy_down; stall_down ;;
    status)        status ;;
    env)           print_env ;;
    push)          [ "${2:-}" = --all ] && CONTPROBE_REGISTRY_ALL=1; push_all ;;
    registry-up)   registry_up ;;
    registry-down) registry_down ;;
    proxy-up)      proxy_up ;;
    proxy-down)    proxy_down ;;
    stall-up)      stall_up ;;
    stall-down)    stall_down ;;
    clean)         registry_down; proxy_down; stall_down; rm -rf "${DIR:?}" ;;
    *) sed -n '2,30p' "$0" >&2; exit 2 ;;
esac
