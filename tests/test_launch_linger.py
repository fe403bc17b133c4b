"""A launch that goes on after its ranks: named from what was really left, never guessed.

Found on this machine: in 7 of 10 two-rank Hydra launches of a SIF on a loaded machine, both ranks
wrote their results, yet an orphaned squashfuse_ll (Apptainer's FUSE image driver, alone in the
container's mount namespace) still held the output pipes Hydra's proxy was reading, so mpiexec
never exited. The harness left MPI with os._exit, so Hydra killed the other rank's container
mid-exit; it now finalizes (bootstrap.leave_mpi). contprobe had called every such ending
`mpi-finalize-hang`, and counted mpiexec itself as a rank process. And a rank
whose container died at start ('FATAL:   "python3": executable file not found in $PATH') left its
peer in MPI until --timeout, because only ranks that had started were watched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from contprobe.commands.run import lingered
from contprobe.inimage import catalog
from contprobe.launch import ALL_WROTE, LaunchResult, execute, is_rank
from contprobe.launchers import nodelog
from contprobe.runtimes.apptainer import Apptainer
from tests.containers import as_user, image, user_dir

FATAL_AT_START = 'INFO:    gocryptfs not found, will not be able to use gocryptfs\n' \
                 'FATAL:   "python3": executable file not found in $PATH\n'    # verbatim, launch.log here


def test_a_container_that_died_at_start_is_an_ended_line_for_apptainer_only():
    assert nodelog.ended_line(FATAL_AT_START, Apptainer.died_line) == \
        'FATAL:   "python3": executable file not found in $PATH'
    assert nodelog.ended_line(FATAL_AT_START) is None                    # no runtime pattern: not ours to say
    assert nodelog.ended_line("INFO:    FATAL: is only a word here\n", Apptainer.died_line) is None


@pytest.mark.parametrize("left, killed, gotcha", [
    (2, ["mpiexec.hydra", "python3"], "mpi-finalize-hang"),
    (0, ["hydra_pmi_proxy", "mpiexec.hydra", "squashfuse_ll"], "fuse-driver-lingers"),
    (0, ["mpiexec.hydra", "ssh"], catalog.UNKNOWN),              # held on another node: not seen from here
    (0, [], catalog.UNKNOWN),
])
def test_what_was_left_names_the_linger(left, killed, gotcha):
    res = LaunchResult(0, "", 40.0, ended_early=ALL_WROTE, killed=killed, ranks_left=left)
    case = lingered(res, 30)
    assert (case.outcome, case.gotcha) == ("warning", gotcha)
    assert f"rank processes left on this host: {left}" in case.message
    assert all(k in case.message for k in killed)
    assert case.fix == catalog.get(gotcha).fix_line


def write_result(results: str) -> str:
    return f'printf "<testsuite/>" > "{results}/junit-r00000-h.xml"'


def test_a_pipe_held_by_a_fuse_driver_is_ended_after_the_grace_and_named(tmp_path):
    results = tmp_path / "ranks"
    results.mkdir()
    # The launcher reads its rank's output through a pipe; the process holding the pipe's other end
    # is called squashfuse_ll, as Apptainer's driver is, and outlives the rank that wrote the result.
    argv = ["bash", "-c", f'{write_result(results)}; (exec -a squashfuse_ll sleep 600) | cat']
    t0 = time.monotonic()
    res = execute(argv, str(tmp_path / "launch.log"), 120, results_dir=str(results), grace_s=1)
    assert time.monotonic() - t0 < 30
    assert res.ended_early == ALL_WROTE and res.ranks_left == 0 and "squashfuse_ll" in res.killed
    assert lingered(res, 1).gotcha == "fuse-driver-lingers"


def test_a_rank_process_still_alive_after_its_result_is_a_teardown_hang(tmp_path):
    results = tmp_path / "ranks"
    results.mkdir()
    script = tmp_path / "inimage" / "bootstrap.py"       # a rank's process, as `ps` shows one
    script.parent.mkdir()
    script.write_text("import time\ntime.sleep(600)\n")
    rank = f"{sys.executable} {script}"
    res = execute(["bash", "-c", f"{write_result(results)}; {rank}"], str(tmp_path / "launch.log"), 120,
                  results_dir=str(results), grace_s=1)
    assert res.ended_early == ALL_WROTE and res.ranks_left == 1
    assert lingered(res, 1).gotcha == "mpi-finalize-hang"


@pytest.mark.slow
def test_a_rank_whose_container_dies_at_start_ends_the_launch_after_the_grace():
    """The real Apptainer refusing to start one rank of two under MPICH's mpiexec (MPMD): the other
    rank waits forever, as a peer in MPI_Init would; its container's FATAL line starts the grace."""
    sif = str(image("base.sif"))
    work = user_dir("contprobe-linger-")
    argv = as_user(["mpiexec", "-n", "1", "sleep", "600", ":",
                    "-n", "1", "apptainer", "exec", sif, "contprobe-no-such-program"])
    t0 = time.monotonic()
    res = execute(argv, os.path.join(work, "launch.log"), 300, results_dir=work, expected=2, grace_s=2,
                  container_died=Apptainer.died_line)
    took = time.monotonic() - t0
    assert res.ended_early.startswith("the launcher reported: FATAL:"), res.log[-2000:]
    assert "contprobe-no-such-program" in res.ended_early and took < 60, took


@pytest.mark.parametrize("argv, rank", [
    (["python3", "/.contprobe/contprobe/inimage/bootstrap.py", "--", "probes"], True),
    (["/opt/conda/bin/python3.10", "/.contprobe/contprobe/inimage/bootstrap.py"], True),
    # the launcher and the runtime carry the same words further along their argv
    (["/usr/bin/mpiexec.hydra", "-n", "2", "apptainer", "exec", "x.sif", "python3",
      "/.contprobe/contprobe/inimage/bootstrap.py"], False),
    (["/usr/bin/apptainer", "exec", "x.sif", "python3", "/.contprobe/contprobe/inimage/bootstrap.py"], False),
    (["python3", "-c", "pass"], False),
])
def test_only_the_ranks_own_python_counts_as_a_rank(argv, rank):
    assert is_rank("\0".join(argv).encode() + b"\0") is rank


@pytest.mark.slow
def test_two_rank_hydra_launches_on_a_busy_machine_end_by_themselves():
    """The harness's own exit must not leave a launch behind: with os._exit, 7 of 10 of these
    lingered (CPU burners make Hydra's kill land while the other rank's container is exiting)."""
    from tests.containers import run_as_user
    image("mpich.sif")
    burners = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(3)]
    try:
        lingered_runs = []
        for i in range(5):
            out = os.path.join(user_dir("contprobe-linger-run-"), "r")
            res = run_as_user(["run", str(image("mpich.sif")), "--ranks", "2", "--launcher", "hydra",
                               "--env", "UCX_POSIX_USE_PROC_LINK=n", "--env", "UCX_TLS=^cma",
                               "-m", "mpi and not allreduce", "--grace", "10", "--no-rerun", "--out", out,
                               "--json", out + ".json"])
            assert res.rc == 0, res.out[-2000:] + res.err[-2000:]
            doc = json.loads(open(out + ".json").read())
            lingered_runs += [r["message"] for r in doc["results"] if r["probe"] == "launch.exit"]
        assert not lingered_runs, lingered_runs
    finally:
        for b in burners:
            b.kill()
            b.wait()


def test_names_of_leftover_processes_cannot_reach_the_terminal_raw(tmp_path):
    """What is left of a launch may be the image's own process, named as it likes (exec -a)."""
    results = tmp_path / "ranks"
    results.mkdir()
    argv = ["bash", "-c", f"{write_result(results)}; (exec -a $'x\\e]0;owned\\a\\e[2J' sleep 600) | cat"]
    res = execute(argv, str(tmp_path / "launch.log"), 120, results_dir=str(results), grace_s=1)
    assert res.ended_early == ALL_WROTE and res.killed
    assert not any(ch in "".join(res.killed) for ch in "\x1b\x07\n"), res.killed
    assert not any(ch in lingered(res, 1).message for ch in "\x1b\x07\n")
