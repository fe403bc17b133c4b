"""Containers at scale: real MPICH `mpiexec` launching real Apptainer containers, one JUnit per rank."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import result_of
from tests.containers import image, run_as_user, user_dir

pytestmark = pytest.mark.slow

UCX_OK = ["--env", "UCX_POSIX_USE_PROC_LINK=n", "--env", "UCX_TLS=^cma"]


@pytest.fixture(autouse=True)
def need_mpiexec():
    if not shutil.which("mpiexec.mpich"):
        pytest.skip("mpiexec.mpich not installed (apt-get install mpich)")


def run(img, *args, timeout=300):
    out = user_dir("contprobe-scale-")
    res = run_as_user(["run", str(image(img)), "--launcher", "hydra", "--out", f"{out}/run", "--json", f"{out}/run.json",
                       "--timeout", str(timeout), *args], timeout=timeout + 120)
    doc = json.load(open(f"{out}/run.json")) if os.path.exists(f"{out}/run.json") else None
    return res, doc, Path(out, "run")


def test_two_ranks_mpi4py_torch_and_horovod_allreduce_pass():
    res, doc, out = run("mpich.sif", "--ranks", "2", *UCX_OK, "-m", "mpi or horovod or allreduce")
    assert res.rc == 0, res
    files = sorted(p.name for p in (out / "ranks").glob("junit-r*.xml"))
    assert len(files) == 2 and files[0].startswith("junit-r00000-") and files[1].startswith("junit-r00001-")
    for probe in ("mpi.world_matches_launcher", "allreduce.mpi4py[1048576]", "allreduce.torch_gloo",
                  "horovod.init", "horovod.allreduce"):
        r = result_of(doc, probe)
        assert r["outcome"] == "passed" and r["message"].startswith("2/2 ranks passed"), r
    busbw = result_of(doc, "allreduce.mpi4py[1048576]")["metrics"]["busbw_gbps"]
    assert busbw > 0
    assert doc["context"]["mpi_flavour"] == "mpich" and doc["context"]["ranks_reported"] == "2"
    # NAME=VALUE the launch adds to its environment come first; then the launcher.
    words = [w for w in doc["context"]["command"].split() if "=" not in w.split("/")[0]]
    assert words[0].endswith(("mpiexec.hydra", "mpiexec.mpich", "mpiexec"))


def test_four_ranks_per_node_with_polaris_gpu_order():
    # 4 ranks on 2 cores are oversubscribed: two message sizes keep the run near 30 s
    res, doc, out = run("mpich.sif", "--ranks", "4", "--ppn", "4", "--nv", "--site", "polaris", *UCX_OK,
                        "-m", "mpi or horovod or allreduce", "--allreduce-sizes", "8,1048576", timeout=600)
    # The one pipeline applies Polaris' performance references: a 2-core CPU machine is below them.
    assert res.rc == 1, res
    assert {r["gotcha"] for r in doc["results"] if r["outcome"] == "failed"} == {"perf-regression"}
    assert result_of(doc, "allreduce.mpi4py[1048576]")["perf"][0]["ok"] is False
    for probe in ("allreduce.torch_gloo", "horovod.allreduce", "mpi.world_matches_launcher", "mpi.placement"):
        r = result_of(doc, probe)
        assert r["outcome"] == "passed" and r["message"].startswith("4/4 ranks passed"), r
    placement = {int(p["rank"]): p for p in doc["placement"]}
    assert sorted(placement) == [0, 1, 2, 3]
    # Polaris numbers GPUs against CPU affinity: local rank r uses GPU 3 - r.
    assert [placement[r]["cuda_visible_devices"] for r in range(4)] == ["3", "2", "1", "0"]
    assert "placement:" in res.out
    assert " -ppn 4 " in doc["context"]["command"] and "--gpu-order=reversed" in doc["context"]["command"]


def test_open_mpi_image_under_mpich_launcher_is_the_singleton_gotcha():
    res, doc, out = run("openmpi.sif", "--ranks", "2", "-m", "mpi and not allreduce")
    assert res.rc == 1, res
    r = result_of(doc, "mpi.world_matches_launcher")
    assert r["outcome"] == "failed" and r["gotcha"] == "mpi-singleton"
    assert "every rank is rank 0" in r["message"] and "this MPI is openmpi" in r["message"]
    assert doc["context"]["mpi_flavour"] == "openmpi"
    junit = (out / "ranks").glob("junit-r00001-*.xml")
    text = next(junit).read_text()
    assert "libmpi.so.40" in text and "COMM_WORLD: rank 0 of 1" in text


def test_ucx_proc_link_failure_loses_ranks_with_the_precise_gotcha():
    res, doc, _ = run("mpich.sif", "--ranks", "2", "-m", "mpi", timeout=120)
    assert res.rc == 1, res
    bad = [r for r in doc["results"] if r["outcome"] in ("lost", "error")]
    assert bad and {r["gotcha"] for r in bad} == {"ucx-shm-proc-link"}   # never the generic rank-lost
    assert {x["gotcha"] for x in doc["lost"]} == {"ucx-shm-proc-link"}
    assert {l["rank"] for l in doc["lost"]} == {0, 1}


def test_ucx_cma_abort_keeps_what_ranks_finished():
    res, doc, out = run("mpich.sif", "--ranks", "2", "--env", "UCX_POSIX_USE_PROC_LINK=n", "-m", "allreduce",
                      "--allreduce-sizes", "8,1048576", timeout=120)
    assert res.rc == 1, res
    assert result_of(doc, "allreduce.mpi4py[8]")["outcome"] == "passed"   # kept from the ranks' journals
    died = result_of(doc, "allreduce.mpi4py[1048576]")
    assert died["outcome"] == "error" and died["gotcha"] == "ucx-cma-eperm"
    assert all(l["reason"].startswith("ended before writing its JUnit") for l in doc["lost"])
    # The merged report keeps the precise cause of the lost ranks, not just "rank lost".
    rep = run_as_user(["report", str(out), "--json", "-"])
    assert rep.rc in (1, 3), rep
    assert {l["gotcha"] for l in rep.json()["lost"]} == {"ucx-cma-eperm"}
    kept = [r for r in rep.json()["results"] if r["probe"] == "allreduce.mpi4py[8]"]
    assert kept and kept[0]["outcome"] == "passed"   # read from the dead ranks' journals


def test_hung_launch_ends_in_a_report():
    """A launch that outlives --timeout is killed whole; its ranks are reported lost, nothing hangs."""
    res, doc, _ = run("mpich.sif", "--ranks", "2", *UCX_OK, "-m", "mpi", "--env", "LD_PRELOAD=", timeout=1)
    assert res.rc == 1, res
    assert {l["rank"] for l in doc["lost"]} == {0, 1}
    assert all("timed out" in x["reason"] for x in doc["lost"])


def test_mpi_library_bound_from_the_host_is_reported_as_such():
    """Where libmpi came from: the image's own, or the host's bound in (as with Cray MPICH's ABI module)."""
    lib = Path("/usr/lib/x86_64-linux-gnu/libmpich.so.12")
    if not lib.exists():
        pytest.skip("host has no libmpich.so.12 (apt-get install libmpich12)")
    real = lib.resolve()
    res, doc, _ = run("mpich.sif", "--ranks", "2", *UCX_OK, "-B", f"{real}:{real}:ro",
                      "-m", "mpi and not allreduce")
    assert res.rc == 0, res
    assert doc["context"]["mpi_origin"] == f"host (bound at {real})"
    res, doc, _ = run("mpich.sif", "--ranks", "2", *UCX_OK, "-m", "mpi and not allreduce")
    assert doc["context"]["mpi_origin"] == "image"
