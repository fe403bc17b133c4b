"""allreduce.*: correctness and bandwidth of allreduce across ranks (mpi4py, torch.distributed).

Figures follow nccl-tests: algbw = bytes / time, busbw = algbw * 2(n-1)/n.
"""
from __future__ import annotations

import array
import os
import socket

import pytest

from contprobe.inimage.diagnose import fail, skip
from contprobe.inimage.options import DEFAULT_ALLREDUCE_SIZES, parse_sizes

pytestmark = [pytest.mark.allreduce, pytest.mark.mpi]


def pytest_generate_tests(metafunc):
    if "nbytes" in metafunc.fixturenames:
        sizes = metafunc.config.getoption("--allreduce-sizes") or parse_sizes(DEFAULT_ALLREDUCE_SIZES)
        metafunc.parametrize("nbytes", sizes, ids=[str(s) for s in sizes])


def bus_factor(n: int) -> float:
    return 2.0 * (n - 1) / n if n > 1 else 1.0


def iterations(nbytes: int) -> int:
    # IMB's rule: about 256 MiB moved per size, between 5 and 1000 repeats. Shorter windows
    # (tried first) measured one preemption as much as the allreduce on a shared node.
    return max(5, min(1000, (256 << 20) // max(nbytes, 1)))


def warmups(reps: int) -> int:
    return max(2, reps // 10)


def test_mpi4py(MPI, nbytes, record_metric):
    comm = MPI.COMM_WORLD
    n, rank = comm.Get_size(), comm.Get_rank()
    count = max(1, nbytes // 4)
    send = array.array("f", [float(rank + 1)]) * count
    recv = array.array("f", [0.0]) * count
    want = float(n * (n + 1) // 2)
    reps = iterations(nbytes)
    for _ in range(warmups(reps)):
        comm.Allreduce([send, MPI.FLOAT], [recv, MPI.FLOAT], op=MPI.SUM)
    wrong = count - recv.count(want)  # C loop: checking 64 MiB stays cheap
    comm.Barrier()
    t0 = MPI.Wtime()
    for _ in range(reps):
        comm.Allreduce([send, MPI.FLOAT], [recv, MPI.FLOAT], op=MPI.SUM)
    mine = MPI.Wtime() - t0
    # Average over ranks, as IMB's t_avg and nccl-tests report; the slowest rank is kept too.
    elapsed = comm.allreduce(mine, op=MPI.SUM) / n / reps
    slowest = comm.allreduce(mine, op=MPI.MAX) / reps
    wrong = comm.allreduce(wrong, op=MPI.SUM)
    algbw = count * 4 / elapsed / 1e9
    record_metric("time_us", elapsed * 1e6)
    record_metric("time_max_us", slowest * 1e6)
    record_metric("algbw_gbps", algbw)
    record_metric("busbw_gbps", algbw * bus_factor(n))
    if wrong:
        fail("allreduce-wrong", f"MPI Allreduce of {count * 4} bytes over {n} ranks: {wrong} wrong element(s)")


@pytest.fixture(scope="module")
def torch_dist(MPI, launch):
    """torch.distributed over gloo, rendezvous through MPI (rank 0's host and a free port)."""
    try:
        import torch
        import torch.distributed as dist
    except ModuleNotFoundError:
        skip("torch-missing", "torch is not installed")
    comm = MPI.COMM_WORLD
    addr = None
    if comm.Get_rank() == 0:
        with socket.socket() as s:
            s.bind(("", 0))
            addr = (socket.gethostname(), s.getsockname()[1])
    host, port = comm.bcast(addr, root=0)
    os.environ.setdefault("MASTER_ADDR", host if comm.Get_size() > 1 else "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port))
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=comm.Get_rank(), world_size=comm.Get_size())
    yield torch, dist
    dist.destroy_process_group()


def timed_all_reduce(torch, dist, t, group, record_metric, sync=lambda: None) -> int:
    """all_reduce of t (filled with rank + 1): wrong elements, with nccl-tests figures recorded."""
    import time
    n, rank = dist.get_world_size(), dist.get_rank()
    want = float(n * (n + 1) // 2)
    t.fill_(float(rank + 1))
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    sync()
    wrong = int((t != want).sum().item())
    t.zero_()  # in-place sums of zeros: the timed repeats cannot overflow
    reps = iterations(t.numel() * 4)
    for _ in range(warmups(reps)):
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    dist.barrier(group=group)
    t0 = time.perf_counter()
    for _ in range(reps):
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    sync()
    elapsed = (time.perf_counter() - t0) / reps
    algbw = t.numel() * 4 / elapsed / 1e9
    record_metric("time_us", elapsed * 1e6)
    record_metric("algbw_gbps", algbw)
    record_metric("busbw_gbps", algbw * bus_factor(n))
    return wrong


def test_torch_gloo(torch_dist, record_metric):
    torch, dist = torch_dist
    t = torch.zeros(1 << 18, dtype=torch.float32)  # 1 MiB
    wrong = timed_all_reduce(torch, dist, t, None, record_metric)
    if wrong:
        fail("allreduce-wrong", f"torch.distributed gloo all_reduce over {dist.get_world_size()} ranks: "
             f"{wrong} wrong element(s)")


def test_torch_nccl(torch_dist, launch, expect_gpus, nv_missing, record_metric):
    """NCCL on the GPUs: a second process group beside gloo, 64 MiB per rank."""
    torch, dist = torch_dist
    if not torch.cuda.is_available():
        from contprobe.inimage.probes.test_torch import why_no_cuda
        gotcha = why_no_cuda(torch, nv_missing)
        if expect_gpus:
            fail(gotcha, "NCCL allreduce needs a visible GPU")
        skip(gotcha, "no GPU visible to torch: NCCL allreduce not run")
    if not dist.is_nccl_available():
        fail("nccl-unavailable", f"torch {torch.__version__} has no NCCL backend")
    torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
    group = dist.new_group(backend="nccl")
    t = torch.zeros(16 << 20, dtype=torch.float32, device="cuda")
    wrong = timed_all_reduce(torch, dist, t, group, record_metric, sync=torch.cuda.synchronize)
    if wrong:
        fail("allreduce-wrong", f"NCCL all_reduce over {dist.get_world_size()} ranks: {wrong} wrong element(s)")


def cuda_aware(MPI) -> str:
    """Why this MPI can take GPU buffers, or '' when nothing says it can."""
    query = getattr(MPI, "Query_cuda_support", None)  # MPIX_Query_cuda_support, mpi4py >= 4
    if query is not None:
        try:
            if query():
                return "MPI_Query_cuda_support() is true"
        except Exception:  # an MPI without the extension raises NotImplementedError
            pass
    if os.environ.get("MPICH_GPU_SUPPORT_ENABLED") == "1":
        return "MPICH_GPU_SUPPORT_ENABLED=1 (Cray MPICH with the GTL)"
    return ""


def test_mpi4py_gpu(MPI, expect_gpus, nv_missing, record_metric):
    """mpi4py Allreduce on GPU buffers (torch tensors), when the MPI is CUDA-aware: 64 MiB."""
    try:
        import torch
    except ModuleNotFoundError:
        skip("torch-missing", "torch is not installed: no GPU buffers to reduce")
    if not torch.cuda.is_available():
        from contprobe.inimage.probes.test_torch import why_no_cuda
        gotcha = why_no_cuda(torch, nv_missing)
        if expect_gpus:
            fail(gotcha, "GPU-buffer allreduce needs a visible GPU")
        skip(gotcha, "no GPU visible to torch: GPU-buffer allreduce not run")
    why = cuda_aware(MPI)
    if not why:
        pytest.skip("this MPI is not known to be CUDA-aware: GPU buffers are not handed to it")
    comm = MPI.COMM_WORLD
    n, rank = comm.Get_size(), comm.Get_rank()
    send = torch.full((16 << 20,), float(rank + 1), dtype=torch.float32, device="cuda")
    recv = torch.zeros_like(send)
    torch.cuda.synchronize()
    comm.Allreduce(send, recv, op=MPI.SUM)  # buffers through __cuda_array_interface__
    torch.cuda.synchronize()
    wrong = comm.allreduce(int((recv != float(n * (n + 1) // 2)).sum().item()), op=MPI.SUM)
    reps = iterations(send.numel() * 4)
    comm.Barrier()
    t0 = MPI.Wtime()
    for _ in range(reps):
        comm.Allreduce(send, recv, op=MPI.SUM)
    torch.cuda.synchronize()
    elapsed = comm.allreduce(MPI.Wtime() - t0, op=MPI.SUM) / n / reps
    algbw = send.numel() * 4 / elapsed / 1e9
    record_metric("time_us", elapsed * 1e6)
    record_metric("busbw_gbps", algbw * bus_factor(n))
    if wrong:
        fail("allreduce-wrong", f"MPI Allreduce on GPU buffers over {n} ranks ({why}): {wrong} wrong element(s)")
