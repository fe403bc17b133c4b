#!/usr/bin/env bash
# Everything contprobe's test suite needs on a fresh Debian 12 machine, as root. Idempotent.
#
#   sudo bash ci/setup.sh
#
# 1. Debian packages the tests use (chromium for the HTML report test, MPICH, build tools).
# 2. The real Apptainer and an unprivileged user (ci/provision/apptainer.sh).
# 3. A venv with torch (CPU), mpi4py built against MPICH, horovod (ci/provision/python-env.sh),
#    plus contprobe itself and its test dependencies.
# 4. The test images (ci/provision/test-images.sh); mpich.sif gets torch and horovod from that venv.
# 5. Rootless podman and Charliecloud for that user, with Charliecloud images of base.sif
#    (ci/provision/runtimes.sh install).
# 6. Slurm, munge and sshd for the namespace cluster of the multi-node tests (ci/services/cluster/).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
VENV=${CONTPROBE_VENV:-/opt/contprobe/venv}
t0=$(date +%s)
step() { printf '\n[setup] == %s (%ss so far)\n' "$*" "$(( $(date +%s) - t0 ))"; }

step "Debian packages"
need=()
for p in chromium mpich libmpich-dev python3-venv python3-dev git; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "Apptainer"
bash ci/provision/apptainer.sh

step "Python environment (torch, mpi4py, horovod)"
bash ci/provision/python-env.sh

step "contprobe and its test dependencies into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]"
chmod -R a+rX "$VENV"

step "test images"
CONTPROBE_VENV=$VENV bash ci/provision/test-images.sh

step "rootless podman and Charliecloud for the unprivileged user (ci/provision/runtimes.sh)"
bash ci/provision/runtimes.sh install

step "ReFrame, the peer the benchmarks compare with"
bash ci/provision/reframe.sh

# The registry tests start and stop the registry themselves: only its packages here.
step "registry packages (docker-registry, skopeo, squid)"
bash ci/provision/registry-packages.sh

# Debian bullseye (3.9) and trixie (3.13), each with and without pytest; cached beside the others
step "Python-range images (py39, py313)"
bash ci/provision/py-range-images.sh

step "Slurm cluster packages (slurm-wlm, munge, openssh-server) for the multi-node tests"
bash ci/services/cluster/cluster.sh install   # tests/cluster.py brings the cluster up and down


step "mpi4py's PyPI binary wheel (the test that names its libmpi.so.12 failure)"
mkdir -p /var/cache/contprobe/binary-wheels
ls /var/cache/contprobe/binary-wheels/mpi4py-*.whl >/dev/null 2>&1 || \
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --no-cache-dir -d /var/cache/contprobe/binary-wheels mpi4py==4.1.2
chmod -R a+rX /var/cache/contprobe/binary-wheels

step "done in $(( $(date +%s) - t0 ))s"
