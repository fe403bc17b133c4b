"""torch probes with the real CPU build of torch: 'no GPU' is a diagnosis (torch-cpu-build), never a crash."""
from __future__ import annotations

import pytest

from conftest import python_with, result_of, run_cli, standin_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def torch_python():
    py = python_with("torch", "contprobe", "junitparser", "tabulate")
    if py is None:
        pytest.skip("no Python here has torch and contprobe (pip install torch==2.13.0 gives the CPU build)")
    return py


def _doctor(py, *args):
    r = run_cli(["doctor", "-m", "torch", "--json", "-", *args], env=standin_env(None), python=py)
    assert r.rc in (0, 1), r
    return r, r.json()


def test_cpu_build_is_a_skip_without_expectation(torch_python):
    r, doc = _doctor(torch_python)
    assert r.rc == 0, r
    assert result_of(doc, "torch.import")["outcome"] == "passed"
    avail = result_of(doc, "torch.cuda_available")
    assert avail["outcome"] == "skipped" and avail["gotcha"] == "torch-cpu-build"
    assert "torch.cuda.is_available() is False" in avail["message"] and "CPU-only build" in avail["message"]
    for probe in ("torch.matmul", "torch.nccl"):
        assert result_of(doc, probe)["outcome"] == "skipped" and result_of(doc, probe)["gotcha"] == "torch-cpu-build"
    assert result_of(doc, "torch.device_count")["outcome"] == "skipped"
    assert doc["context"].get("torch_cuda") == "none" and doc["context"].get("torch", "").startswith("2.")


def test_cpu_build_fails_when_a_gpu_is_expected(torch_python):
    r, doc = _doctor(torch_python, "--expect-gpus", "1")
    assert r.rc == 1, r
    for probe in ("torch.cuda_available", "torch.device_count", "torch.matmul", "torch.nccl"):
        res = result_of(doc, probe)
        assert res["outcome"] == "failed" and res["gotcha"] == "torch-cpu-build", res
        assert res["fix"]
    assert "torch-cpu-build" in [g["id"] for g in doc["gotchas"]]
