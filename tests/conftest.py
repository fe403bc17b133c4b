"""Shared helpers for the project's own tests: paths, the stand-in nvidia-smi, running the CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBES = ROOT / "contprobe" / "inimage" / "probes"
FIXTURES = ROOT / "tests" / "fixtures"
NVSMI_FIXTURES = FIXTURES / "nvidia-smi"
STANDINS = ROOT / "tests" / "standins"
OPT_PYTHON = "/opt/contprobe/venv/bin/python"


def clean_env(**extra: str) -> Dict[str, str]:
    """This process's environment without launcher variables (a test under mpiexec must not leak them)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PALS_", "OMPI_", "SLURM_", "HYDRA_", "MPI_LOCALRANKID", "PMIX_"))}
    env.pop("LD_PRELOAD", None)
    env.update(extra)
    return env


def path_without_nvidia_smi() -> str:
    """PATH with every directory holding an nvidia-smi removed: 'no GPU here' whatever the machine."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not os.path.exists(os.path.join(d, "nvidia-smi"))]
    return os.pathsep.join(dirs)


def standin_env(fixture: Optional[str], **extra: str) -> Dict[str, str]:
    """Environment whose nvidia-smi is the stand-in replaying NVSMI_FIXTURES/<fixture> (None: no nvidia-smi)."""
    path = path_without_nvidia_smi()
    if fixture is None:
        return clean_env(PATH=path, **extra)
    return clean_env(PATH=str(STANDINS) + os.pathsep + path,
                     CONTPROBE_NVSMI_FIXTURE=str(NVSMI_FIXTURES / fixture), **extra)


class CLIResult:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> dict:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


def run_cli(args: List[str], env: Optional[Dict[str, str]] = None, python: str = sys.executable,
            cwd: Optional[str] = None, timeout: float = 600, user: Optional[str] = None) -> CLIResult:
    """`python -m contprobe ARGS` in a child process (optionally as another user through runuser)."""
    argv = [python, "-m", "contprobe", *args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env if env is not None else clean_env(), cwd=cwd or str(ROOT), timeout=timeout)
    return CLIResult(proc)


def python_with(*modules: str) -> Optional[str]:
    """A Python (the prepared /opt venv first, then this one) that imports all modules, or None."""
    for py in (OPT_PYTHON, sys.executable):
        if not os.path.exists(py):
            continue
        code = "import " + ", ".join(modules)
        try:
            ok = subprocess.run([py, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                timeout=120).returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if ok:
            return py
    return None


def result_of(doc: dict, probe: str) -> dict:
    found = [r for r in doc["results"] if r["probe"] == probe]
    assert found, f"no result for {probe}: {[r['probe'] for r in doc['results']]}"
    return found[0]


@pytest.fixture
def mpiexec() -> str:
    exe = shutil.which("mpiexec.mpich")
    if not exe:
        pytest.skip("mpiexec.mpich not installed (apt-get install mpich libmpich-dev)")
    return exe


@pytest.fixture
def host_dir():
    """A directory on the host that apptainer does not bind by default (/tmp and $HOME are), writable by
    the test user who runs the containers."""
    import uuid
    d = Path("/srv") / f"contprobe-{uuid.uuid4().hex[:8]}"
    d.mkdir(parents=True)
    os.chmod(d, 0o777)
    yield str(d)
    shutil.rmtree(d, ignore_errors=True)

