"""What the harness brings into a container: the package (read-only) and, if needed, pytest.

Staged once per run directory on the host and bound at /.contprobe; the image is never touched.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
WHEELS_DIR = PACKAGE_DIR / "_vendor" / "wheels"
MOUNT = "/.contprobe"               # harness (read-only) inside the container
RESULTS_MOUNT = "/.contprobe-out"   # rank results (read-write) inside the container


def stage(harness_dir: str) -> str:
    """Copy the package and unpack the brought-along pytest into harness_dir; return it."""
    dst = os.path.join(harness_dir, "contprobe")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(PACKAGE_DIR, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "wheels"))
    pylib = os.path.join(harness_dir, "pylib")
    if not os.path.isdir(pylib):
        os.makedirs(pylib)
        for whl in sorted(WHEELS_DIR.glob("*.whl")):
            with zipfile.ZipFile(whl) as zf:
                zf.extractall(pylib)
    # World-readable: under a launcher the ranks may run as another user than the stager.
    for root, dirs, files in os.walk(harness_dir):
        for name in dirs + files:
            p = os.path.join(root, name)
            os.chmod(p, os.stat(p).st_mode | 0o444 | (0o111 if os.path.isdir(p) else 0))
    return harness_dir


PROBES = f"{MOUNT}/contprobe/probes"


def node_id(probe: str) -> str:
    """pytest node id inside the container for a probe id: binds.expected[/x] -> .../test_binds.py::test_expected[/x]."""
    group, _, name = probe.partition(".")
    return f"{PROBES}/test_{group}.py::test_{name}"


def bootstrap_command(python: str, pytest_args: list, targets: list = (), gpus_per_node: int = 0,
                      gpu_order: str = "natural") -> list:
    opts = [f"--gpus-per-node={gpus_per_node}", f"--gpu-order={gpu_order}"] if gpus_per_node else []
    return [python, f"{MOUNT}/contprobe/bootstrap.py", *opts, "--", *(list(targets) or [PROBES]), *pytest_args]
