#!/usr/bin/env bash
# Run contprobe's own test suite (after ci/setup.sh). Extra arguments go to pytest.
#
#   bash ci/test.sh            # everything
#   bash ci/test.sh -m 'not slow'
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CONTPROBE_VENV:-/opt/contprobe/venv}
# The end-to-end tests run apptainer and mpiexec as the unprivileged user, who must read the tree.
chmod -R a+rX . 2>/dev/null || true
exec "$VENV/bin/python" -m pytest tests -ra "$@"
