"""What the harness brings into a container: the in-image subpackage (read-only) and, if needed, pytest.

Only `contprobe/inimage/` (plus the two-line `contprobe/__init__.py` that makes it importable) is
staged: the host side (CLI, reports, backends) never enters an image under test. Staged once per
results directory on the host and bound at /.contprobe; the image is never touched.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import List, Sequence

PACKAGE_DIR = Path(__file__).resolve().parent
INIMAGE_DIR = PACKAGE_DIR / "inimage"
WHEELS_DIR = INIMAGE_DIR / "_vendor" / "wheels"
MOUNT = "/.contprobe"               # harness (read-only) inside the container
RESULTS_MOUNT = "/.contprobe-out"   # rank results (read-write) inside the container
INIMAGE = f"{MOUNT}/contprobe/inimage"
PROBES = f"{INIMAGE}/probes"


def stage(harness_dir: str) -> str:
    """Copy the in-image subpackage and unpack the brought-along pytest into harness_dir; return it."""
    pkg = os.path.join(harness_dir, "contprobe")
    if os.path.exists(pkg):
        shutil.rmtree(pkg)
    os.makedirs(pkg)
    shutil.copy2(PACKAGE_DIR / "__init__.py", os.path.join(pkg, "__init__.py"))
    shutil.copytree(INIMAGE_DIR, os.path.join(pkg, "inimage"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "wheels"))
    pylib = os.path.join(harness_dir, "pylib")
    if not os.path.isdir(pylib):
        os.makedirs(pylib)
        for whl in sorted(WHEELS_DIR.glob("*.whl")):
            with zipfile.ZipFile(whl) as zf:
                zf.extractall(pylib)
    # Readable by all, writable by none: under a launcher the ranks may run as another user than the
    # stager, and nothing inside a container may change what the next rank imports.
    for root, dirs, files in os.walk(harness_dir):
        for name in dirs + files:
            p = os.path.join(root, name)
            os.chmod(p, 0o555 if os.path.isdir(p) else 0o444)
    os.chmod(harness_dir, 0o555)
    return harness_dir


def node_id(probe: str) -> str:
    """pytest node id inside the container for a probe id: binds.expected[/x] -> .../test_binds.py::test_expected[/x]."""
    group, _, name = probe.partition(".")
    return f"{PROBES}/test_{group}.py::test_{name}"


def bootstrap_command(python: str, pytest_args: Sequence[str], targets: Sequence[str] = (),
                      gpus_per_node: int = 0, gpu_order: str = "natural") -> List[str]:
    opts = [f"--gpus-per-node={gpus_per_node}", f"--gpu-order={gpu_order}"] if gpus_per_node else []
    return [python, f"{INIMAGE}/bootstrap.py", *opts, "--", *(list(targets) or [PROBES]), *pytest_args]
