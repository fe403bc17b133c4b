#!/usr/bin/env bash
# Debian packages the registry tests use (tests/registry.py starts ci/services/registry/registry.sh):
#   docker-registry (the CNCF distribution registry), skopeo (OCI push, digest checks), squid (the
#   refusing proxy). Idempotent: installs only what is missing. As root.
#
#   bash ci/provision/registry-packages.sh
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "[registry-packages] run as root" >&2; exit 1; }
need=()
for p in docker-registry skopeo squid; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's packages would start a registry on :5000 and a squid on :3128 where an init system runs
# them; the tests start their own on loopback, so nothing else may hold those ports
for svc in docker-registry squid; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done
echo "[registry-packages] installed ${need[*]}" >&2
