"""Launchers and runtimes emit argument lists: each flavour only its own flags."""
from __future__ import annotations

import pytest

from contprobe import launcher as L
from contprobe import runtime as R
from contprobe.bootstrap import gpu_for, local_rank

OPENMPI_ONLY = ("--npernode", "--bind-to", "--map-by", "-x")


def req(**kw):
    return L.LaunchRequest(**{"ranks": 8, "ppn": 4, **kw})


def test_pals_never_emits_open_mpi_flags():
    argv = L.LAUNCHERS["pals"].argv(req(depth=8, cpu_bind="depth", hostfile="/var/spool/pbs/aux/123",
                                        env={"A": "1"}), executable="mpiexec")
    assert argv == ["mpiexec", "-n", "8", "--ppn", "4", "--depth", "8", "--cpu-bind", "depth",
                    "--hostfile", "/var/spool/pbs/aux/123", "--env", "A=1"]
    assert not set(argv) & set(OPENMPI_ONLY)


def test_hydra_openmpi_and_srun_forms():
    assert L.LAUNCHERS["hydra"].argv(req(hosts=("a", "b")), executable="mpiexec.hydra") == \
        ["mpiexec.hydra", "-n", "8", "-ppn", "4", "-hosts", "a,b"]
    assert L.LAUNCHERS["openmpi"].argv(req(hosts=("a", "b")), executable="mpirun") == \
        ["mpirun", "-n", "8", "--map-by", "ppr:4:node", "--host", "a:4,b:4"]
    assert L.LAUNCHERS["srun"].argv(req(), executable="srun") == ["srun", "-n", "8", "--ntasks-per-node=4"]
    assert L.LAUNCHERS["none"].argv(L.LaunchRequest(ranks=1)) == []
    with pytest.raises(L.LauncherError):
        L.LAUNCHERS["none"].argv(req())


@pytest.mark.parametrize("banner,flavour", [
    ("HYDRA build details:\n    Version: 4.0.2", "hydra"),
    ("mpiexec (OpenRTE) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/", "openmpi"),
    ("something else", None),
])
def test_banner_flavour(banner, flavour):
    assert L.banner_flavour(banner) == flavour


def test_detect_prefers_site_then_slurm(monkeypatch):
    assert L.detect({}, site_launcher="pals") == "pals"
    monkeypatch.setattr(L.shutil, "which", lambda exe: "/usr/bin/srun" if exe == "srun" else None)
    assert L.detect({"SLURM_JOB_ID": "1"}) == "srun"
    assert L.detect({}) == "none"


def test_hosts_from_nodefile(tmp_path):
    f = tmp_path / "nodes"
    f.write_text("x3001c0s1b0n0.hsn\nx3001c0s1b0n0.hsn\nx3002c0s7b1n0.hsn\n\n")
    assert L.hosts_from_nodefile(str(f)) == ["x3001c0s1b0n0.hsn", "x3002c0s7b1n0.hsn"]


@pytest.mark.parametrize("text,parsed", [
    ("apptainer version 1.4.5", ("apptainer", "1.4.5")),
    ("singularity-ce version 4.1.3-jammy", ("singularity-ce", "4.1.3-jammy")),
    ("singularity version 3.8.7", ("singularity", "3.8.7")),
    ("bash: singularity: command not found", None),
])
def test_runtime_flavour_and_prefix(text, parsed):
    assert R.parse_version(text) == parsed
    if parsed:
        rt = R.Runtime(parsed[0], "/usr/bin/x", parsed[1])
        assert rt.env_prefix == ("APPTAINERENV_" if parsed[0] == "apptainer" else "SINGULARITYENV_")
        assert rt.cachedir_var.endswith("_CACHEDIR") and rt.tmpdir_var.endswith("_TMPDIR")


def test_exec_argv_is_a_list_with_nothing_added_silently():
    rt = R.Runtime("apptainer", "/usr/bin/apptainer", "1.4.5")
    argv = R.exec_argv(rt, R.ExecSpec(image="/x.sif", command=["python3", "-c", "print('a b')"],
                                      binds=["/lus"], env={"A": "x y"}))
    assert argv == ["/usr/bin/apptainer", "exec", "-B", "/lus", "--env", "A=x y", "/x.sif", "python3", "-c",
                    "print('a b')"]
    assert "--cleanenv" not in argv and "--nv" not in argv


def test_gpu_binding_order():
    assert [gpu_for(r, 4, "reversed") for r in range(8)] == [3, 2, 1, 0, 3, 2, 1, 0]
    assert [gpu_for(r, 4, "natural") for r in range(4)] == [0, 1, 2, 3]
    assert local_rank({"PALS_LOCAL_RANKID": "2", "PMI_LOCAL_RANK": "1"}) == 2
    assert local_rank({"MPI_LOCALRANKID": "3"}) == 3 and local_rank({}) == 0


def test_pals_binding_comes_from_the_site_profile():
    from contprobe import site
    from contprobe.cmd_run import flag_value
    args = site.load("polaris").launcher_args
    assert (flag_value(args, "--depth"), flag_value(args, "--cpu-bind")) == ("8", "depth")
    assert flag_value(site.load("generic").launcher_args, "--depth") is None
    assert flag_value(("--depth",), "--depth") is None   # a flag without its value gives nothing
