"""nvcc.*: the CUDA compiler: present, its version, a tiny kernel compiled, run and checked."""
from __future__ import annotations

import os
import re
import tempfile

import pytest

from contprobe.inimage import catalog, context
from contprobe.inimage.diagnose import fail, skip
from contprobe.inimage.probes.conftest import has_device_nodes

pytestmark = pytest.mark.nvcc

KERNEL = r"""
#include <cstdio>
__global__ void axpy(int n, float a, const float *x, float *y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}
int main() {
  const int n = 1 << 16;
  float *x, *y;
  cudaError_t e = cudaMallocManaged(&x, n * sizeof(float));
  if (e != cudaSuccess) { printf("CUDA error: %s\n", cudaGetErrorString(e)); return 3; }
  cudaMallocManaged(&y, n * sizeof(float));
  for (int i = 0; i < n; i++) { x[i] = 1.0f; y[i] = (float)(i % 7); }
  axpy<<<(n + 255) / 256, 256>>>(n, 2.0f, x, y);
  e = cudaDeviceSynchronize();
  if (e != cudaSuccess) { printf("CUDA error: %s\n", cudaGetErrorString(e)); return 3; }
  double sum = 0; for (int i = 0; i < n; i++) sum += y[i];
  printf("checksum %.1f\n", sum);
  return 0;
}
"""
N = 1 << 16
EXPECTED = 2.0 * N + sum(i % 7 for i in range(N))


def version_of(text: str) -> str:
    m = re.search(r"release ([0-9]+\.[0-9]+)", text)
    return m.group(1) if m else ""


def vtuple(v: str):
    return tuple(int(p) for p in v.split(".") if p.isdigit())


@pytest.fixture(scope="module")
def nvcc_version():
    rc, out, err = context.run_cmd(["nvcc", "--version"], 60)
    if rc == 127:
        skip("nvcc-missing", "nvcc not on PATH (a runtime-only image or no CUDA module loaded)")
    if rc != 0 or not version_of(out):
        fail("nvcc-compile-failed", f"`nvcc --version` exited {rc}", out + err)
    return version_of(out)


def test_version(nvcc_version, contprobe_state):
    contprobe_state.record("nvcc", nvcc_version)


def test_toolkit_vs_driver(nvcc_version, nvsmi):
    if not nvsmi.rows:
        skip("no-gpu-visible", "no NVIDIA driver visible to compare the toolkit with")
    banner = nvsmi.banner()
    driver_cuda = context.driver_cuda_version(banner)
    if not driver_cuda:
        pytest.skip("nvidia-smi printed no 'CUDA Version'")
    if vtuple(nvcc_version)[:2] > vtuple(driver_cuda)[:2]:
        fail("cuda-driver-too-old", f"nvcc {nvcc_version} is newer than the driver's CUDA {driver_cuda}",
             f"driver {context.driver_version(banner)} supports CUDA {driver_cuda}")


def test_kernel(nvcc_version, expect_gpus, nvsmi):
    with tempfile.TemporaryDirectory(prefix="contprobe-nvcc-") as tmp:
        src, exe = os.path.join(tmp, "axpy.cu"), os.path.join(tmp, "axpy")
        with open(src, "w") as fh:
            fh.write(KERNEL)
        rc, out, err = context.run_cmd(["nvcc", "-O2", "-o", exe, src], 300)
        if rc != 0:
            fail(catalog.match(out + err, among=["nvcc-compile-failed", "cuda-driver-too-old"]) if out + err else "unknown",
                 f"nvcc could not compile a 20-line kernel (exit {rc})", (out + err)[-2000:])
        rc, out, err = context.run_cmd([exe], 120)
    text = (out + err).strip()
    if rc != 0:
        gotcha = catalog.match(text, among=["cuda-driver-too-old", "no-gpu-visible", "nvidia-driver-not-loaded"])
        # With no driver at all the CUDA runtime also says "driver version is insufficient":
        # that is a machine without a GPU, not a toolkit too new for its driver.
        if gotcha == "no-gpu-visible" or (not nvsmi.rows and not has_device_nodes()):
            if expect_gpus:
                fail("no-gpu-visible", "the kernel compiled but found no GPU to run on", text)
            skip("no-gpu-visible", f"kernel compiled with nvcc {nvcc_version}; no GPU to run it on ({text})")
        fail(gotcha, f"the compiled kernel exited {rc}", text)
    m = re.search(r"checksum ([0-9.]+)", text)
    if not m or abs(float(m.group(1)) - EXPECTED) > 0.5:
        fail("gpu-compute-wrong", f"kernel checksum {m.group(1) if m else '?'} != {EXPECTED:.1f}", text)
