"""torch.*: PyTorch's CUDA view, a checked matmul on every GPU, NCCL."""
from __future__ import annotations

import time

import pytest

from contprobe.inimage.diagnose import fail, skip
from contprobe.inimage.probes.conftest import has_device_nodes

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def torch():
    try:
        import torch as _torch
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            skip("torch-missing", "torch is not installed in this Python")
        raise
    return _torch


def why_no_cuda(torch, nv_missing: bool) -> str:
    """The gotcha for torch seeing no GPU; nv_missing: in a container started without --nv (or not known)."""
    if torch.version.cuda is None:
        return "torch-cpu-build"
    if nv_missing and not has_device_nodes():
        return "nv-flag-missing"
    return "no-gpu-visible"


def test_import(torch, contprobe_state):
    contprobe_state.record("torch", torch.__version__)
    contprobe_state.record("torch_cuda", torch.version.cuda or "none")


def test_cuda_available(torch, expect_gpus, nv_missing):
    if not torch.cuda.is_available():
        gotcha = why_no_cuda(torch, nv_missing)
        what = (f"torch {torch.__version__} sees no GPU: torch.cuda.is_available() is False"
                + (" (torch.version.cuda is None: CPU-only build)" if torch.version.cuda is None else ""))
        if expect_gpus:
            fail(gotcha, what)
        skip(gotcha, what)


def test_device_count(torch, expect_gpus, nv_missing):
    if expect_gpus is None:
        pytest.skip("no --expect-gpus given")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n != expect_gpus:
        gotcha = "gpu-count-low" if n else why_no_cuda(torch, nv_missing)
        fail(gotcha, f"expected {expect_gpus} GPUs, found {n} (torch.cuda.device_count())")


def test_matmul(torch, expect_gpus, nv_missing, record_metric):
    if not torch.cuda.is_available():
        if expect_gpus:
            fail(why_no_cuda(torch, nv_missing), "no GPU to run the matmul on")
        skip(why_no_cuda(torch, nv_missing), "no GPU visible to torch: matmul not run")
    gen = torch.Generator().manual_seed(1234)
    a = torch.rand(512, 512, generator=gen, dtype=torch.float64)
    b = torch.rand(512, 512, generator=gen, dtype=torch.float64)
    want = a @ b
    wrong = []
    for i in range(torch.cuda.device_count()):
        dev = torch.device("cuda", i)
        got = (a.to(dev) @ b.to(dev)).cpu()
        if not torch.allclose(got, want, rtol=1e-9, atol=1e-9):
            err = (got - want).abs().max().item()
            wrong.append(f"cuda:{i} {torch.cuda.get_device_name(i)}: max abs error {err:g}")
    if wrong:
        fail("gpu-compute-wrong", f"GPU result differs from CPU on {len(wrong)} GPU(s)", "\n".join(wrong))
    # Throughput on GPU 0 (fp16, tensor cores): a figure for the site's performance reference.
    n = 4096
    x = torch.rand(n, n, device="cuda:0", dtype=torch.float16)
    y = torch.rand(n, n, device="cuda:0", dtype=torch.float16)
    for _ in range(3):
        x @ y
    torch.cuda.synchronize(0)
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        x @ y
    torch.cuda.synchronize(0)
    record_metric("matmul_fp16_tflops", 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12)


def test_h2d_bandwidth(torch, expect_gpus, nv_missing, record_metric):
    """Pinned host-to-device copy of 256 MiB to every GPU; the slowest GPU's GB/s is the figure."""
    if not torch.cuda.is_available():
        if expect_gpus:
            fail(why_no_cuda(torch, nv_missing), "no GPU to copy to")
        skip(why_no_cuda(torch, nv_missing), "no GPU visible to torch: host-to-device copy not run")
    host = torch.ones(64 << 20, dtype=torch.float32).pin_memory()
    rates = []
    for i in range(torch.cuda.device_count()):
        dev = torch.empty_like(host, device=f"cuda:{i}")
        dev.copy_(host, non_blocking=True)
        torch.cuda.synchronize(i)
        reps = 5
        t0 = time.perf_counter()
        for _ in range(reps):
            dev.copy_(host, non_blocking=True)
        torch.cuda.synchronize(i)
        rates.append(host.numel() * 4 * reps / (time.perf_counter() - t0) / 1e9)
        if float(dev[-1].item()) != 1.0:
            fail("gpu-compute-wrong", f"cuda:{i}: host-to-device copy arrived wrong")
    record_metric("h2d_gbps", min(rates))


def test_nccl(torch, expect_gpus, nv_missing):
    import torch.distributed as dist
    if not torch.cuda.is_available():
        if expect_gpus:
            fail(why_no_cuda(torch, nv_missing), "NCCL needs a visible GPU")
        skip(why_no_cuda(torch, nv_missing), "no GPU visible: NCCL not needed")
    if not dist.is_available() or not dist.is_nccl_available():
        fail("nccl-unavailable", f"torch {torch.__version__} has no NCCL backend")
