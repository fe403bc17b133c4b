"""Parsing of recorded nvidia-smi and nvcc outputs by the gpu and nvcc probes' helpers."""
from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

from contprobe.inimage import context
from conftest import NVSMI_FIXTURES, PROBES, result_of, run_cli, standin_env


def _load_nvcc_module():
    # Loaded by path so that pytest's own marker registration is not needed for this import.
    spec = importlib.util.spec_from_file_location("probe_nvcc", PROBES / "test_nvcc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_query_rows_from_recorded_h200_node():
    text = (NVSMI_FIXTURES / "h200nvl-x8" / "query-gpu=index,name,uuid.csv").read_text()
    rows = context.parse_query_gpu(text)  # the header line is skipped
    assert [r.index for r in rows] == list(range(8))
    assert {r.name for r in rows} == {"NVIDIA H200 NVL"}
    assert rows[0].uuid == "GPU-f5ec9d38-2cba-a4b8-a8ef-72d26911880e"
    assert rows[7].uuid == "GPU-a78708c1-6bdf-2b53-0e8d-5cc284c27fe0"
    assert context.NVSMI_QUERY == "index,name,uuid"  # what the fixture recorded


def test_driver_and_cuda_from_recorded_banner():
    banner = (NVSMI_FIXTURES / "titan-xp-banner" / "banner.txt").read_text()
    assert context.driver_version(banner) == "450.57"
    assert context.driver_cuda_version(banner) == "11.0"
    for failure in ("driver-not-loaded", "version-mismatch", "no-devices"):
        text = (NVSMI_FIXTURES / failure / "all.txt").read_text()
        assert context.driver_version(text) == "" and context.parse_query_gpu(text) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")
def test_nvcc_version_and_toolkit_newer_than_driver():
    nvcc = _load_nvcc_module()
    # `nvcc --version` as printed by CUDA 10.0 (https://github.com/qixuema/envs/issues/4).
    out = ("nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2018 NVIDIA Corporation\n"
           "Built on Sat_Aug_25_21:08:01_CDT_2018\nCuda compilation tools, release 10.0, V10.0.130\n")
    assert nvcc.version_of(out) == "10.0"
    banner = (NVSMI_FIXTURES / "titan-xp-banner" / "banner.txt").read_text()
    driver_cuda = context.driver_cuda_version(banner)
    assert nvcc.vtuple("12.4")[:2] > nvcc.vtuple(driver_cuda)[:2]      # too new for CUDA 11.0
    assert not nvcc.vtuple("10.0")[:2] > nvcc.vtuple(driver_cuda)[:2]
    assert nvcc.EXPECTED == 2.0 * nvcc.N + sum(i % 7 for i in range(nvcc.N))


def test_nvcc_missing_is_a_skip():
    env = standin_env(None)
    env["PATH"] = os.pathsep.join(d for d in env["PATH"].split(os.pathsep)
                                  if not os.path.exists(os.path.join(d, "nvcc")))
    r = run_cli(["doctor", "-m", "nvcc", "--json", "-"], env=env)
    assert r.rc == 0, r
    doc = r.json()
    for probe in ("nvcc.version", "nvcc.toolkit_vs_driver", "nvcc.kernel"):
        res = result_of(doc, probe)
        assert res["outcome"] == "skipped" and res["gotcha"] == "nvcc-missing", res


@pytest.mark.slow
def test_nvcc_compiles_the_kernel_without_a_gpu():
    """A real CUDA toolkit without a GPU: the kernel compiles, running it is a skip naming no-gpu-visible."""
    if not shutil.which("nvcc"):
        pytest.skip("no CUDA toolkit (nvcc) on this machine")
    r = run_cli(["doctor", "-m", "nvcc", "--json", "-"], env=standin_env(None))
    assert r.rc == 0, r
    doc = r.json()
    assert result_of(doc, "nvcc.version")["outcome"] == "passed"
    kernel = result_of(doc, "nvcc.kernel")
    assert kernel["outcome"] == "skipped" and kernel["gotcha"] == "no-gpu-visible", kernel
    assert "kernel compiled with nvcc" in kernel["message"]
    r = run_cli(["doctor", "-m", "nvcc", "--expect-gpus", "1", "--json", "-"], env=standin_env(None))
    assert r.rc == 1 and result_of(r.json(), "nvcc.kernel")["gotcha"] == "no-gpu-visible"
