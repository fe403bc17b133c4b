"""Launcher, runtime and scheduler backends: argument lists, each kind only its own flags."""
from __future__ import annotations

import pytest

from contprobe import launchers as L
from contprobe import runtimes as R
from contprobe import schedulers as S
from contprobe.inimage.bootstrap import gpu_for, local_rank
from contprobe.inimage.rankvars import identify

OPENMPI_ONLY = ("--npernode", "--bind-to", "--map-by", "-x")


def req(**kw):
    return L.LaunchRequest(**{"ranks": 8, "ppn": 4, **kw})


def test_pals_never_emits_open_mpi_flags():
    argv = L.REGISTRY["pals"]("mpiexec").argv(req(depth=8, cpu_bind="depth", hostfile="/var/spool/pbs/aux/123",
                                                  env={"A": "1"}))
    assert argv == ["mpiexec", "-n", "8", "--ppn", "4", "--depth", "8", "--cpu-bind", "depth",
                    "--hostfile", "/var/spool/pbs/aux/123", "--env", "A"]
    assert not set(argv) & set(OPENMPI_ONLY)


def test_hydra_openmpi_and_srun_forms():
    assert L.REGISTRY["hydra"]("mpiexec.hydra").argv(req(hosts=("a", "b"))) == \
        ["mpiexec.hydra", "-n", "8", "-ppn", "4", "-hosts", "a,b"]
    assert L.REGISTRY["openmpi"]("mpirun").argv(req(hosts=("a", "b"))) == \
        ["mpirun", "-n", "8", "--map-by", "ppr:4:node", "--host", "a:4,b:4"]
    assert L.REGISTRY["srun"]("srun").argv(req()) == ["srun", "-n", "8", "--ntasks-per-node=4"]


@pytest.mark.parametrize("banner,flavour", [
    ("HYDRA build details:\n    Version: 4.0.2", "hydra"),
    ("mpiexec (OpenRTE) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/", "openmpi"),
    ("slurm 22.05.8", "srun"),
    ("slurm-wlm 22.05.8", "srun"),          # Debian's package, verbatim from `srun --version`
    ("something else", None),
])
def test_each_launcher_recognises_its_own_banner(banner, flavour):
    assert [n for n in L.DETECT_ORDER if L.REGISTRY[n].recognises(banner)][:1] == ([flavour] if flavour else [])


def test_a_shadowing_mpiexec_is_the_launcher_mismatch_gotcha(monkeypatch):
    """Polaris asks for PALS; a conda MPICH's Hydra mpiexec is first on PATH: never pass it PALS flags."""
    monkeypatch.setattr(L.REGISTRY["pals"], "find", classmethod(lambda cls: "/opt/conda/bin/mpiexec"))
    monkeypatch.setattr(L, "version_text", lambda exe: "HYDRA build details:\n    Version: 4.0.2")
    with pytest.raises(L.MismatchError) as exc:
        L.get("pals")
    assert exc.value.actual == "hydra" and "/opt/conda/bin/mpiexec" in str(exc.value)
    from contprobe.inimage import catalog
    assert catalog.match(str(exc.value), "launch") == "launcher-mismatch"
    assert catalog.match("[mpiexec@x3001] match_arg (utils/args/args.c:159): unrecognized argument depth",
                         "launch") == "launcher-mismatch"


def test_detect_prefers_site_then_slurm(monkeypatch):
    assert L.detect({}, site_launcher="pals") == "pals"
    monkeypatch.setattr(L.shutil, "which", lambda exe: "/usr/bin/srun" if exe == "srun" else None)
    assert L.detect({"SLURM_JOB_ID": "1"}) == "srun"
    assert L.detect({}) == "none"


def test_hosts_from_nodefile(tmp_path):
    f = tmp_path / "nodes"
    f.write_text("x3001c0s1b0n0.hsn\nx3001c0s1b0n0.hsn\nx3002c0s7b1n0.hsn\n\n")
    assert L.hosts_from_nodefile(str(f)) == ["x3001c0s1b0n0.hsn", "x3002c0s7b1n0.hsn"]
    f.write_text(":4\nn01:2\n  # a comment\nn02 slots=2\n")     # a line naming no host is no host
    assert L.hosts_from_nodefile(str(f)) == ["n01", "n02"]


@pytest.mark.parametrize("name,text,version", [
    ("apptainer", "apptainer version 1.4.5", "1.4.5"),
    ("singularity", "singularity-ce version 4.1.3-jammy", "4.1.3-jammy"),
    ("singularity", "singularity version 3.8.7", "3.8.7"),
    ("singularity", "apptainer version 1.4.5", None),     # apptainer's compatibility link is not SingularityCE
])
def test_runtime_versions_and_prefixes(name, text, version):
    cls = R.REGISTRY[name]
    m = cls.version_re.search(text)
    assert (m.group(1) if m else None) == version
    rt = cls("/usr/bin/x", "1")
    assert rt.env_prefix == ("APPTAINERENV_" if name == "apptainer" else "SINGULARITYENV_")
    assert rt.cachedir_var.endswith("_CACHEDIR") and rt.tmpdir_var.endswith("_TMPDIR")


def test_exec_argv_is_a_list_and_values_travel_in_the_environment():
    rt = R.REGISTRY["apptainer"]("/usr/bin/apptainer", "1.4.5")
    argv, env = rt.exec_argv(R.ExecSpec(image="/x.sif", command=["python3", "-c", "print('a b')"],
                                        binds=["/lus"], env={"A": "x y"}))
    assert argv == ["/usr/bin/apptainer", "exec", "-B", "/lus", "/x.sif", "python3", "-c", "print('a b')"]
    assert env == {"APPTAINERENV_A": "x y"}


def test_gpu_binding_order_and_rank_variables():
    assert [gpu_for(r, 4, "reversed") for r in range(8)] == [3, 2, 1, 0, 3, 2, 1, 0]
    assert [gpu_for(r, 4, "natural") for r in range(4)] == [0, 1, 2, 3]
    assert local_rank({"PALS_RANKID": "5", "PALS_LOCAL_RANKID": "2", "PMI_LOCAL_RANK": "1"}) == 2
    assert local_rank({"PMI_RANK": "3", "MPI_LOCALRANKID": "3"}) == 3 and local_rank({}) == 0
    # srun --mpi=pmi2 sets PMI_RANK too: it is srun, with Slurm's local id
    assert identify({"PMI_RANK": "5", "PMI_SIZE": "8", "SLURM_PROCID": "5", "SLURM_NTASKS": "8",
                     "SLURM_LOCALID": "1"}) == ("srun", 5, 8, 1)
    # Hydra started through Slurm leaves its proxy's SLURM_PROCID (a node index) in every rank
    assert identify({"PMI_RANK": "5", "PMI_SIZE": "8", "SLURM_PROCID": "1", "SLURM_NTASKS": "2",
                     "MPI_LOCALRANKID": "1"}) == ("hydra", 5, 8, 1)


def test_slurm_and_pbs_allocations(tmp_path):
    from contprobe.schedulers.slurm import expand_nodelist
    assert expand_nodelist("nid[001-003,007],login1") == ["nid001", "nid002", "nid003", "nid007", "login1"]
    assert expand_nodelist("n01") == ["n01"]
    alloc = S.current({"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "nid[001-002]"}, "slurm")
    assert alloc.scheduler == "slurm" and alloc.hosts == ["nid001", "nid002"] and alloc.job_id == "42"
    f = tmp_path / "nodefile"
    f.write_text("x1\nx1\nx2\n")
    alloc = S.current({"PBS_JOBID": "7.polaris", "PBS_NODEFILE": str(f)}, "pbs")
    assert alloc.scheduler == "pbs" and alloc.hosts == ["x1", "x2"] and alloc.hostfile == str(f)
    assert S.current({}) is None


def test_a_session_with_no_member_left_is_forgotten(monkeypatch):
    """Session numbers are reused once every member is gone: a later session with the same number
    (after a pid wrap-around) must not be taken for the launch's and killed."""
    from contprobe import launch
    tables = [[(100, 1, 100), (200, 100, 200)],      # launcher 100 started rank session 200
              [(100, 1, 100)],                       # session 200 ended
              [(100, 1, 100), (300, 1, 200)]]        # an unrelated daemon's new session got number 200
    monkeypatch.setattr(launch, "_proc_table", lambda: tables.pop(0))
    monkeypatch.setattr(launch, "_cmdline", lambda pid: b"x")
    sessions = set()
    assert [p for p, _ in launch.launch_processes(100, sessions)] == [100, 200]
    assert [p for p, _ in launch.launch_processes(100, sessions)] == [100]
    assert [p for p, _ in launch.launch_processes(100, sessions)] == [100]
