"""mpi and horovod probes under a real MPICH mpiexec, one JUnit file per rank; and the singleton gotcha."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import junitparser
import pytest

from conftest import PROBES, ROOT, clean_env, path_without_nvidia_smi, python_with

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mpi_python():
    py = python_with("mpi4py.MPI", "contprobe")
    if py is None:
        pytest.skip("no Python here has mpi4py built against MPICH "
                    "(MPICC=mpicc.mpich pip install --no-binary mpi4py mpi4py)")
    return py


def read_rank_files(results: Path):
    """{rank: (suite properties, {probe: (outcome, gotcha)})} from every junit-r*.xml in results."""
    out = {}
    for f in sorted(results.glob("junit-r*.xml")):
        xml = junitparser.JUnitXml.fromfile(str(f))
        suite = (list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml])[0]
        props = {p.name: p.value for p in suite.properties()}
        cases = {}
        for case in suite:
            el = case.child(junitparser.Properties)
            cp = {p.name: p.value for p in (el if el is not None else ())}
            outcome = type(case.result[0]).__name__.lower() if case.result else "passed"
            cases[cp["probe"]] = (outcome, cp.get("gotcha", ""))
        rank = int(props["rank"])
        assert f.name == f"junit-r{rank:05d}-{socket.gethostname()}.xml"
        out[rank] = (props, cases)
    return out


def run_under_mpiexec(mpiexec, py, n, results, *args, timeout=300):
    argv = [mpiexec, "-n", str(n), py, "-m", "pytest", str(PROBES), "-q", "-p", "no:cacheprovider",
            "--results-dir", str(results), *args]
    return subprocess.run(argv, env=clean_env(PATH=path_without_nvidia_smi()), cwd=str(ROOT), timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("n", [2, 4])
def test_mpi_probes_pass_on_every_rank(mpiexec, mpi_python, tmp_path, n):
    p = run_under_mpiexec(mpiexec, mpi_python, n, tmp_path, "-m", "mpi", "--allreduce-sizes", "8,65536",
                          "--expect-ranks", str(n))
    assert p.returncode == 0, p.stdout[-4000:]
    ranks = read_rank_files(tmp_path)
    assert sorted(ranks) == list(range(n))
    for rank, (props, cases) in ranks.items():
        assert props["size"] == str(n) and props["launcher"] == "hydra"
        assert "MPICH" in props["mpi_library"] and props["mpi_flavour"] == "mpich"
        for probe in ("mpi.import", "mpi.library", "mpi.world_matches_launcher", "mpi.placement",
                      "allreduce.mpi4py[8]", "allreduce.mpi4py[65536]"):
            assert cases[probe] == ("passed", ""), (rank, probe, cases[probe])
        # Every probe on every rank passed or, like torch without torch, skipped with a reason.
        assert all(outcome in ("passed", "skipped") for outcome, _ in cases.values()), cases


def test_expect_ranks_mismatch_fails(mpiexec, mpi_python, tmp_path):
    p = run_under_mpiexec(mpiexec, mpi_python, 2, tmp_path, "-m", "mpi and not allreduce", "--expect-ranks", "3")
    assert p.returncode == 1, p.stdout[-4000:]
    for rank, (props, cases) in read_rank_files(tmp_path).items():
        assert cases["mpi.world_matches_launcher"] == ("failure", "rank-lost")


def test_singleton_under_launcher_variables_is_every_rank_is_rank_0(mpi_python, tmp_path):
    """PMI_RANK/PMI_SIZE say rank 1 of 2, but no launcher started us: MPI comes up as a singleton."""
    xml = tmp_path / "j.xml"
    env = clean_env(PATH=path_without_nvidia_smi(), PMI_RANK="1", PMI_SIZE="2")
    p = subprocess.run([mpi_python, "-m", "pytest", str(PROBES), "-q", "-p", "no:cacheprovider",
                        "-m", "mpi and not allreduce", "--junitxml", str(xml)],
                       env=env, cwd=str(ROOT), timeout=300, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    assert p.returncode == 1, p.stdout[-4000:]
    xml_doc = junitparser.JUnitXml.fromfile(str(xml))
    suite = (list(xml_doc) if isinstance(xml_doc, junitparser.JUnitXml) else [xml_doc])[0]
    found = {}
    for case in suite:
        el = case.child(junitparser.Properties)
        cp = {q.name: q.value for q in (el if el is not None else ())}
        found[cp["probe"]] = (case.result[0] if case.result else None, cp)
    res, cp = found["mpi.world_matches_launcher"]
    assert type(res).__name__ == "Failure" and cp["gotcha"] == "mpi-singleton"
    assert "every rank is rank 0" in cp["message"] and "COMM_WORLD size 1" in cp["message"]
    assert found["mpi.import"][0] is None  # mpi4py itself is fine


def test_horovod_allreduce_passes_for_real(mpiexec, tmp_path):
    py = python_with("horovod.torch", "contprobe")
    if py is None:
        pytest.skip("horovod.torch is not importable in /opt/contprobe/venv or this Python yet")
    p = run_under_mpiexec(mpiexec, py, 2, tmp_path, "-m", "horovod")
    assert p.returncode == 0, p.stdout[-4000:]
    ranks = read_rank_files(tmp_path)
    assert sorted(ranks) == [0, 1]
    for rank, (props, cases) in ranks.items():
        assert cases["horovod.init"] == ("passed", "") and cases["horovod.allreduce"] == ("passed", ""), cases
        assert props.get("horovod")
