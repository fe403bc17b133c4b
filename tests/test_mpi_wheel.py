"""pip's mpi4py binary wheel on Debian's MPICH: the libmpi.so.12 ImportError is named, with the fix."""
from __future__ import annotations

import glob
import zipfile

import pytest

from tests.conftest import clean_env, python_with, result_of, run_cli

WHEELS = "/var/cache/contprobe/binary-wheels"


def test_binary_wheel_is_diagnosed(tmp_path):
    wheels = sorted(glob.glob(f"{WHEELS}/mpi4py-*.whl"))
    if not wheels:
        pytest.skip(f"no mpi4py binary wheel in {WHEELS} (ci/setup.sh downloads it)")
    python = python_with("mpi4py")
    if python is None:
        pytest.skip("no Python with contprobe's dependencies and a working mpi4py")
    with zipfile.ZipFile(wheels[-1]) as zf:   # a wheel is a zip: unpacked, it imports as installed
        zf.extractall(tmp_path / "site")
    res = run_cli(["doctor", "-m", "mpi", "-k", "import", "--json", "-"], python=python,
                  env=clean_env(PYTHONPATH=str(tmp_path / "site")))
    assert res.rc == 1, res
    r = result_of(res.json(), "mpi.import")
    assert r["outcome"] == "error" and r["gotcha"] == "mpi4py-wheel-libmpi", r
    assert "MPICC=mpicc.mpich" in r["fix"] and "--no-binary mpi4py" in r["fix"]
