# Sourced by the image-building scripts (ci/provision/test-images.sh, py-range-images.sh): the cache of
# built images and their recipe hashes, and the chroot mounts to undo on exit. The caller sets CACHE and
# defines log(); RECORD_WIDTH sets the name column of the summary.

declare -a MOUNTED=() SUMMARY=()
cleanup_mounts() {
    local m
    for m in "${MOUNTED[@]+"${MOUNTED[@]}"}"; do
        mountpoint -q "$m" && umount -l "$m" || true
    done
}
trap cleanup_mounts EXIT

sha() { sha256sum | cut -c1-64; }

# recipe hash: the named functions' source + extra strings (a changed recipe rebuilds its image)
recipe_hash() {
    local fns=$1; shift
    { for f in $fns; do declare -f "$f"; done; printf '%s\n' "$@"; } | sha
}

up_to_date() {  # NAME HASH
    [ "${CONTPROBE_REBUILD:-0}" != 1 ] && [ -e "$CACHE/$1" ] && [ -f "$CACHE/$1.recipe-sha256" ] \
        && [ "$(cat "$CACHE/$1.recipe-sha256")" = "$2" ]
}

human() { du -sh --apparent-size "$1" 2>/dev/null | cut -f1; }

record() {  # NAME SECONDS STATUS
    SUMMARY+=("$(printf "%-${RECORD_WIDTH:-14}s %-8s %6ss  %s" "$1" "$(human "$CACHE/$1")" "$2" "$3")")
}

# cached_step NAME HASH RECIPE [ARGS...]: build NAME in the cache with RECIPE unless it is there with
# this hash; the hash file is written only after the recipe succeeded.
cached_step() {
    local name=$1 h=$2 t0; shift 2
    if up_to_date "$name" "$h"; then
        log "$name: up to date, skipped"
        record "$name" 0 "cached"
        return
    fi
    log "$name: building"
    t0=$(date +%s); T_STEP=$t0
    rm -f "$CACHE/$name.recipe-sha256"
    "$@"
    echo "$h" >"$CACHE/$name.recipe-sha256"
    chmod 644 "$CACHE/$name.recipe-sha256"
    log "$name: built in $(( $(date +%s) - t0 ))s"
    record "$name" "$(( $(date +%s) - t0 ))" "built"
}
