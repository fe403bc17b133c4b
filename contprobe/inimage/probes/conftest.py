"""Wires the contprobe plugin into the probe suite and holds the fixtures probes share.

Runs inside images: Python 3.8, standard library and pytest only.
"""
from __future__ import annotations

import os
from typing import List, Optional

import pytest

from contprobe.inimage import catalog, context, mpi_info
from contprobe.inimage.diagnose import fail, skip
from contprobe.inimage.plugin import *  # noqa: F401,F403  (the plugin's __all__: hooks and fixtures, used by name)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # One probe per expectation, so each bind or variable gets its own verdict and id.
    for fixture, option in (("expected_bind", "--expect-bind"), ("expected_env", "--expect-env")):
        if fixture in metafunc.fixturenames:
            # The same expectation given twice is one probe; a :rw bind is told apart from a plain one
            # (otherwise pytest would suffix duplicate ids with 0, 1: "/lus0" reads as another path).
            values = list(dict.fromkeys(metafunc.config.getoption(option))) or [None]
            ids = [(v.path + (":rw" if v.writable else "")) if hasattr(v, "path") else (v.name if v else "none")
                   for v in values]
            metafunc.parametrize(fixture, values, ids=ids)


@pytest.fixture(scope="session")
def expect_gpus(request) -> Optional[int]:
    return request.config.getoption("--expect-gpus")


@pytest.fixture(scope="session")
def in_container() -> bool:
    return context.container_info()[1] != "none"


@pytest.fixture(scope="session")
def nv_missing(request, in_container) -> bool:
    """In a container that was not started with --nv (or nobody said): GPU absence is then --nv's."""
    return in_container and request.config.getoption("--container-nv") != "yes"


@pytest.fixture(scope="session")
def launch() -> context.LaunchInfo:
    return context.launch_info()


class NvidiaSmi:
    """Result of one `nvidia-smi --query-gpu` call, shared by the gpu probes."""

    def __init__(self) -> None:
        self.rc, self.out, self.err = context.run_cmd(
            ["nvidia-smi", f"--query-gpu={context.NVSMI_QUERY}", "--format=csv,noheader"], 60)
        self.rows: List[context.GpuRow] = context.parse_query_gpu(self.out) if self.rc == 0 else []

    @property
    def found(self) -> bool:
        return self.rc != 127

    @property
    def text(self) -> str:
        return (self.out + "\n" + self.err).strip()

    def banner(self) -> str:
        """Plain `nvidia-smi`: the table whose header names the driver and its CUDA version."""
        if not hasattr(self, "_banner"):
            rc, out, err = context.run_cmd(["nvidia-smi"], 60)
            self._banner = out if rc == 0 else ""
        return self._banner


@pytest.fixture(scope="session")
def nvsmi() -> NvidiaSmi:
    return NvidiaSmi()


def has_device_nodes() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


@pytest.fixture(scope="session")
def MPI(launch):
    try:
        from mpi4py import MPI as _MPI
    except ModuleNotFoundError as exc:
        if exc.name != "mpi4py":
            raise
        what = "mpi4py is not installed in this Python"
        if launch.launched and launch.size > 1:
            fail("mpi4py-missing", what + f" (launched as rank {launch.rank} of {launch.size} by {launch.launcher})")
        skip("mpi4py-missing", what)
    except ImportError as exc:  # mpi4py present, its MPI library is not
        # The whole catalog, not a short list: an MPI-4 symbol missing from the host MPI is a hybrid
        # version mismatch, not an ABI mix-up; the engine prefers 'unknown' to a guess.
        fail(catalog.match(str(exc)), "mpi4py cannot load its MPI library", str(exc))
    return _MPI


@pytest.fixture(scope="session")
def mpi_lib(MPI, in_container, contprobe_state):
    text = MPI.Get_library_version().replace("\x00", "").strip()
    name, soname = mpi_info.flavour(text)
    libs = mpi_info.loaded_mpi_libraries()
    origin = mpi_info.library_origin(libs[0], in_container) if libs else "unknown"
    info = {"version": text.splitlines()[0] if text else "", "flavour": name, "abi": soname,
            "libraries": ";".join(libs), "origin": origin}
    contprobe_state.record("mpi_library", info["version"])
    contprobe_state.record("mpi_flavour", name)
    contprobe_state.record("mpi_libraries", info["libraries"])
    contprobe_state.record("mpi_origin", origin)
    return info
