# Sourced by the CI scripts: the Debian URI this machine's apt uses (deb822 or one-line
# format), so images and unstable's packages come from the same mirror; CONTPROBE_APT_MIRROR
# overrides it, deb.debian.org is the fallback.
mirror_uri() {
    local u=""
    if [ -n "${CONTPROBE_APT_MIRROR:-}" ]; then echo "$CONTPROBE_APT_MIRROR"; return; fi
    u=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -vE 'security|updates' | grep -E 'debian/?$' | head -n1 || true)
    [ -n "$u" ] || u=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$3 !~ /security|updates/ {for(i=2;i<=NF;i++) if($i ~ /^(http|https|file):/){print $i; exit}}' \
        | grep -E 'debian/?$' | head -n1 || true)
    echo "${u:-http://deb.debian.org/debian}"
}
