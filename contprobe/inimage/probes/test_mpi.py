"""mpi.*: mpi4py importable, the MPI library's flavour and ABI, agreement with the launcher."""
from __future__ import annotations

import os

import pytest

from contprobe.inimage import mpi_info
from contprobe.inimage.diagnose import fail

pytestmark = pytest.mark.mpi


def test_import(MPI, contprobe_state):
    import mpi4py
    contprobe_state.record("mpi4py", mpi4py.__version__)


def test_library(mpi_lib):
    if mpi_lib["flavour"] == "unknown":
        fail("unknown", "MPI library of unknown flavour", mpi_lib["version"])


def test_world_matches_launcher(MPI, mpi_lib, launch, request):
    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    expect = request.config.getoption("--expect-ranks")
    evidence = (f"launcher: {launch.launcher} (rank {launch.rank} of {launch.size}); "
                f"COMM_WORLD: rank {rank} of {size}; MPI: {mpi_lib['version']} "
                f"[{mpi_lib['abi'] or '?'}] from {mpi_lib['origin']} ({mpi_lib['libraries'] or 'no libmpi mapped'})")
    if launch.launched and (size != launch.size or rank != launch.rank):
        wants = mpi_info.LAUNCHER_ABI.get(launch.launcher, "any")
        has = mpi_info.abi_family(mpi_lib["flavour"])
        abi = (f"; the {launch.launcher} launcher speaks {wants} PMI but this MPI is {has}"
               if wants not in ("any", has) else "")
        fail("mpi-singleton", f"every rank is rank 0: COMM_WORLD size {size} but the launcher started "
             f"{launch.size}{abi}", evidence)
    if expect is not None and size != expect:
        fail("mpi-singleton" if size == 1 else "rank-lost", f"COMM_WORLD size {size}, expected {expect}", evidence)


def test_placement(MPI, launch, nvsmi, contprobe_state):
    """Every rank reports host, local rank, GPU binding and CPU affinity; rank 0 checks GPU sharing."""
    import socket
    comm = MPI.COMM_WORLD
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    mine = {"rank": comm.Get_rank(), "host": socket.gethostname(), "local_rank": launch.local_rank,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
            "gpu_uuids": ";".join(r.uuid for r in nvsmi.rows), "cpus": compress(cpus)}
    contprobe_state.record("cpu_affinity", mine["cpus"])
    table = comm.allgather(mine)
    shared = {}
    for row in table:
        if row["gpu_uuids"] and row["cuda_visible_devices"] != "<unset>":
            shared.setdefault((row["host"], row["gpu_uuids"]), []).append(row["rank"])
        elif row["gpu_uuids"]:  # all GPUs visible: every such rank on the host uses GPU 0
            shared.setdefault((row["host"], "all"), []).append(row["rank"])
    clashes = {k: v for k, v in shared.items() if len(v) > 1}
    if clashes:
        fail("gpu-binding", "ranks share GPU(s): " + "; ".join(f"ranks {v} on {k[0]}" for k, v in clashes.items()),
             "\n".join(str(r) for r in table))


def compress(cpus) -> str:
    """[0,1,2,3,8] -> '0-3,8'."""
    out, start, prev = [], None, None
    for c in cpus:
        if start is None:
            start = prev = c
        elif c == prev + 1:
            prev = c
        else:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = c
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(out)
