#!/usr/bin/env bash
# ReFrame (the peer of ci/bench/bench_reframe.sh) in its own venv, runnable by the unprivileged user.
# Idempotent. RFM_VENV (default /opt/reframe-venv), RFM_VERSION (default 4.10.4).
set -euo pipefail
RFM_VENV=${RFM_VENV:-/opt/reframe-venv}
RFM_VERSION=${RFM_VERSION:-4.10.4}
if [[ -x $RFM_VENV/bin/reframe ]] && [[ $("$RFM_VENV/bin/reframe" --version) == "$RFM_VERSION" ]]; then
    exit 0
fi
# The system Python, not a root-only one (pyenv under /root): the benchmark runs ReFrame as cpuser.
/usr/bin/python3 -m venv "$RFM_VENV"
"$RFM_VENV/bin/pip" install -q --disable-pip-version-check "reframe-hpc==$RFM_VERSION"
chmod -R a+rX "$RFM_VENV"
