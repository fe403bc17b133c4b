#!/usr/bin/env bash
# Run contprobe's own test suite (after ci/setup.sh). Extra arguments go to pytest.
#
#   bash ci/test.sh            # everything
#   bash ci/test.sh -m 'not slow'
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CONTPROBE_VENV:-/opt/contprobe/venv}
USER_=${CONTPROBE_USER:-cpuser}
# The end-to-end tests run apptainer, mpiexec and contprobe itself as the unprivileged user, who
# must read this tree. A checkout under a private directory (/root/...) is unreadable to that
# user whatever its own modes: then the tests run from a readable copy of it.
chmod -R a+rX . 2>/dev/null || true
if [ "$(id -u)" = 0 ] && id "$USER_" >/dev/null 2>&1 && ! runuser -u "$USER_" -- test -r "$PWD/README.md"; then
    copy=/var/tmp/contprobe-test-src
    echo "[test] $PWD is not readable by $USER_: testing a readable copy in $copy" >&2
    rm -rf "$copy" && mkdir -p "$copy" && cp -a . "$copy/" && chmod -R a+rX "$copy"
    cd "$copy"
fi
exec "$VENV/bin/python" -m pytest tests -ra "$@"
