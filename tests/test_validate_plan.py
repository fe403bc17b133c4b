"""validate --site NAME inside an allocation takes ranks and hosts from the site's scheduler."""
from __future__ import annotations

from contprobe.commands import run as runcmd
from contprobe.commands.validate import apply_site
from contprobe.launchers import LaunchRequest
from contprobe.launchers.srun import Srun
from contprobe.reports.pipeline import Outputs
from contprobe.site import load
from contprobe.suite import Expectations


def request(site):
    return runcmd.RunRequest(image="/x.sif", site=site, exp=Expectations(), outputs=Outputs())


def test_perlmutter_inside_a_slurm_allocation_plans_the_right_srun():
    site = load("perlmutter")
    env = {"SLURM_JOB_ID": "123", "SLURM_JOB_NODELIST": "nid[001000-001003]"}
    req = apply_site(request(site), site, env)
    assert (req.ranks, req.ppn, req.nv, req.exp.gpus, req.exp.ranks) == (16, 4, True, 1, 16)
    assert req.hostfile is None     # srun knows its allocation
    argv = Srun("/usr/bin/srun").argv(LaunchRequest(ranks=req.ranks, ppn=req.ppn, cpu_bind=site.launcher_cpu_bind,
                                                    extra=site.launcher_args))
    assert argv == ["/usr/bin/srun", "-n", "16", "--ntasks-per-node=4", "--cpu-bind=cores", "--mpi=pmi2", "-c", "32"]


def test_polaris_inside_a_pbs_allocation_takes_the_nodefile(tmp_path):
    site = load("polaris")
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x3001c0s1b0n0\nx3001c0s1b1n0\n")
    req = apply_site(request(site), site, {"PBS_JOBID": "1.polaris", "PBS_NODEFILE": str(nodefile)})
    assert (req.ranks, req.ppn, req.hostfile) == (8, 4, str(nodefile))


def test_outside_an_allocation_one_rank_sees_every_gpu():
    site = load("perlmutter")
    req = apply_site(request(site), site, {})
    assert (req.ranks, req.exp.gpus) == (1, 4)
