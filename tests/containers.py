"""Helpers for tests that start real containers: the runtime as an unprivileged user, images, dirs.

Root on the CI machine lacks CAP_SYS_RESOURCE, so `apptainer exec` runs as the user `cpuser`
(created by ci/provision/apptainer.sh), as HPC users run it.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.conftest import OPT_PYTHON, ROOT, CLIResult, clean_env

IMAGES = Path(os.environ.get("CONTPROBE_IMAGES", "/var/tmp/contprobe-images"))
USER = os.environ.get("CONTPROBE_USER", "cpuser")


def _user() -> Optional[pwd.struct_passwd]:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        return None


def user_python() -> str:
    """A Python the unprivileged user can execute that has contprobe's dependencies."""
    if os.environ.get("CONTPROBE_USER_PYTHON"):
        return os.environ["CONTPROBE_USER_PYTHON"]
    return OPT_PYTHON if os.path.exists(OPT_PYTHON) else sys.executable


def image(name: str) -> Path:
    """A test image from ci/provision/test-images.sh, or a skip that says how to get it."""
    if not shutil.which("apptainer"):
        pytest.skip("apptainer not installed (bash ci/provision/apptainer.sh)")
    if os.geteuid() == 0 and _user() is None:
        pytest.skip(f"user {USER} missing: apptainer cannot run as root here (bash ci/provision/apptainer.sh)")
    path = IMAGES / name
    if not path.exists():
        pytest.skip(f"{path} not built (bash ci/provision/test-images.sh)")
    return path


def user_dir(prefix: str = "contprobe-e2e-") -> str:
    """A fresh directory the unprivileged user owns (pytest's tmp_path is root-only)."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    u = _user()
    if os.geteuid() == 0 and u is not None:
        os.chown(d, u.pw_uid, u.pw_gid)
    return d


def as_user(argv: List[str]) -> List[str]:
    return ["runuser", "-u", USER, "--", *argv] if os.geteuid() == 0 else list(argv)


def run_as_user(args: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 900,
                cwd: Optional[str] = None) -> CLIResult:
    """`python -m contprobe ARGS` as the unprivileged user, from the checkout."""
    env = dict(env if env is not None else clean_env())
    env["PYTHONPATH"] = str(ROOT)
    env.pop("HOME", None)   # runuser keeps the environment: let HOME be the user's own
    argv = as_user(["env", f"HOME={home()}", user_python(), "-m", "contprobe", *args])
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=cwd or user_dir("contprobe-cwd-"), timeout=timeout)
    return CLIResult(proc)


def home() -> str:
    u = _user()
    return u.pw_dir if (os.geteuid() == 0 and u is not None) else os.path.expanduser("~")


def chown_tree(path: str) -> None:
    u = _user()
    if os.geteuid() != 0 or u is None:
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *[os.path.join(root, d) for d in dirs], *[os.path.join(root, f) for f in files]]:
            os.chown(name, u.pw_uid, u.pw_gid, follow_symlinks=False)
