"""What runs inside images must stay Python 3.8 compatible: stdlib and pytest only."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

# Exactly what harness.stage() copies into images.
IN_IMAGE = ["contprobe/__init__.py", "contprobe/inimage"]
STDLIB = set(getattr(sys, "stdlib_module_names", ()))


def test_vermin_says_python_38():
    # The console script next to this Python (a venv's bin/ need not be on PATH), else PATH's.
    from pathlib import Path
    local = Path(sys.executable).parent / "vermin"
    vermin = str(local) if local.exists() else shutil.which("vermin")
    if not vermin:
        pytest.skip("vermin is not installed (pip install vermin)")
    argv = [vermin]
    p = subprocess.run([*argv, "-t=3.8-", "--no-tips", "--violations", *IN_IMAGE], cwd=str(ROOT),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout


@pytest.mark.skipif(not STDLIB, reason="sys.stdlib_module_names needs Python >= 3.10")
def test_module_level_imports_are_stdlib_pytest_or_contprobe():
    """torch, mpi4py, horovod, numpy may only be imported inside a probe, never at module level."""
    files = [p for entry in IN_IMAGE for p in ((ROOT / entry).rglob("*.py") if (ROOT / entry).is_dir()
                                               else [ROOT / entry])]
    bad = []
    for f in files:
        for node in ast.parse(f.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Try):  # the guarded tomllib/tomli fallback chain
                continue
            for n in names:
                top = n.split(".")[0]
                if top not in STDLIB and top not in ("pytest", "contprobe", "__future__", "_pytest"):
                    bad.append(f"{f.relative_to(ROOT)}: {n}")
    assert not bad, bad
