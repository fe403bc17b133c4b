"""What the launcher's own output says about nodes, read from launch logs recorded on the 4-node
namespace cluster (ci/services/cluster/, tests/test_cluster_e2e.py); lines verbatim."""
from __future__ import annotations

from contprobe.commands.validate import apply_site
from contprobe.launchers import nodelog
from contprobe.schedulers import current
from contprobe.schedulers.slurm import tasks_per_node

NEVER_STARTED = """\
srun: error: Task launch for StepId=3.0 failed on node n03: Communication connection failure
srun: error: Application launch failed: Communication connection failure
srun: Job step aborted: Waiting up to 7 seconds for job step to finish.
slurmstepd-n01: error: *** STEP 3.0 ON n01 CANCELLED AT 2026-11-29T08:45:46 ***
srun: error: n02: tasks 2-3: Killed
srun: error: n01: tasks 0-1: Killed
srun: error: n04: tasks 6-7: Killed
"""
NODE_DOWN = """\
srun: error: Node failure on n03
slurmstepd-n01: error: *** STEP 79.0 ON n01 CANCELLED AT 2026-11-29T07:51:47 DUE TO NODE FAILURE, SEE SLURMCTLD LOG FOR DETAILS ***
srun: Job step aborted: Waiting up to 7 seconds for job step to finish.
srun: error: n02: task 1: Terminated
"""
NO_IMAGE = """\
FATAL:   While checking container encryption: could not open image /tmp/contprobe-img-xo6bq2l8/base.sif: failed to retrieve path for /tmp/contprobe-img-xo6bq2l8/base.sif: lstat /tmp/contprobe-img-xo6bq2l8/base.sif: no such file or directory
srun: error: n03: tasks 4-5: Exited with exit code 255
"""
HYDRA_SSH = "ssh: connect to host n03 port 22: Connection refused\n" \
            "[mpiexec@vm] HYDU_sock_write (utils/sock/sock.c:254): write error (Bad file descriptor)\n"


def test_srun_task_lines_place_ranks_on_their_nodes():
    ends = nodelog.task_ends(NEVER_STARTED)
    assert ends[0] == ("n01", "Killed") and ends[3] == ("n02", "Killed") and ends[7] == ("n04", "Killed")
    assert 4 not in ends and nodelog.task_ends(NODE_DOWN)[1] == ("n02", "Terminated")


def test_the_node_the_launcher_blames_and_why():
    assert [(f.host, f.gotcha) for f in nodelog.node_faults(NEVER_STARTED)] == [("n03", "node-launch-failed")]
    assert [(f.host, f.gotcha) for f in nodelog.node_faults(NODE_DOWN)] == [("n03", "node-failure")]
    assert [(f.host, f.gotcha) for f in nodelog.node_faults(HYDRA_SSH)] == [("n03", "node-launch-failed")]
    assert nodelog.node_faults("srun: error: Node failure on n[03-04]")[1].host == "n04"
    # A task that exited says nothing about its node unless the image could not be opened there.
    assert nodelog.node_faults(NO_IMAGE) == []
    assert [(f.host, f.gotcha) for f in nodelog.node_faults(NO_IMAGE, image_missing=True)] == \
        [("n03", "image-missing-on-node")]


def test_a_line_saying_a_task_ended_starts_the_grace():
    assert nodelog.ended_line(NO_IMAGE) == "srun: error: n03: tasks 4-5: Exited with exit code 255"
    assert nodelog.ended_line(HYDRA_SSH).startswith("ssh: connect to host n03")
    assert nodelog.ended_line("....ss..  [100%]\n6 passed in 1.2s\n") is None


def test_slurm_tasks_per_node_and_validate_ranks_without_gpus():
    assert tasks_per_node("2(x4)") == 2 and tasks_per_node("2,2") == 2
    assert tasks_per_node("3(x2),1") is None and tasks_per_node("") is None
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[01-04]", "SLURM_TASKS_PER_NODE": "2(x4)"}
    assert current(env, "slurm").ranks_per_node == 2
    from contprobe.commands import run as runcmd
    from contprobe.reports.pipeline import Outputs
    from contprobe.site import load
    from contprobe.suite import Expectations
    site = load("generic")
    req = apply_site(runcmd.RunRequest(image="x.sif", site=site, exp=Expectations(), outputs=Outputs()), site, env)
    assert (req.ranks, req.ppn, req.exp.ranks) == (8, 2, 8)


def test_a_rank_aborting_under_a_launcher_that_does_not_own_it_starts_the_grace():
    # UCX aborting a rank under Hydra's ssh bootstrap (4-node cluster): the only sign is the rank's own.
    log = "[n01:21299:0:21299]      cma_ep.c:81   process_vm_readv(pid=21375) returned -1: Operation not permitted\n" \
          "==== backtrace (tid:  21299) ====\nFatal Python error: Aborted\n\nCurrent thread 0x00007f (most recent call first):\n"
    assert nodelog.ended_line(log) == "Fatal Python error: Aborted"


def test_the_launch_environment_ends_with_a_variable_nobody_needs(tmp_path):
    """Hydra 4.0.2's remote proxies drop the environment's last variable when filtering by -genvlist."""
    from contprobe.launch import ENV_TAIL, execute
    res = execute(["env"], str(tmp_path / "launch.log"), 30, env={"APPTAINERENV_UCX_TLS": "^cma"})
    lines = res.log.strip().splitlines()
    assert res.returncode == 0 and lines[-1] == f"{ENV_TAIL}=1" and "APPTAINERENV_UCX_TLS=^cma" in lines
