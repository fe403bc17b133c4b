"""horovod.*: import, init, size agrees with MPI, allreduce of a known tensor is exact."""
from __future__ import annotations

import pytest

from contprobe.inimage import catalog
from contprobe.inimage.diagnose import fail, skip

pytestmark = pytest.mark.horovod


@pytest.fixture(scope="module")
def hvd():
    try:
        import torch  # noqa: F401  (horovod.torch needs it; missing torch is its own skip)
    except ModuleNotFoundError:
        skip("torch-missing", "torch is not installed: horovod.torch cannot be used")
    try:
        import horovod.torch as _hvd
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "horovod":
            skip("horovod-missing", "horovod is not installed in this Python")
        raise
    except ImportError as exc:  # installed but broken (built against another torch/MPI)
        fail(catalog.match(str(exc)), "horovod.torch does not import", str(exc))
    _hvd.init()
    return _hvd


def test_init(hvd, launch, contprobe_state):
    import horovod
    contprobe_state.record("horovod", horovod.__version__)
    if launch.launched and hvd.size() != launch.size:
        fail("horovod-size-mismatch", f"hvd.size() {hvd.size()} != MPI size {launch.size} from the launcher",
             f"mpi_built={hvd.mpi_built()} gloo_built={hvd.gloo_built()} rank={hvd.rank()}")


def test_allreduce(hvd):
    import torch
    n = hvd.size()
    t = torch.full((1024,), float(hvd.rank() + 1), dtype=torch.float64)
    got = hvd.allreduce(t, op=hvd.Sum, name="contprobe.allreduce")
    want = n * (n + 1) / 2
    wrong = int((got != want).sum().item())
    if wrong:
        fail("allreduce-wrong", f"hvd.allreduce: {wrong} wrong element(s) of 1024, expected {want}",
             f"first values: {got[:4].tolist()}")
