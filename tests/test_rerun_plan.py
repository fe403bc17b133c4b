"""Which one-change re-runs a failed container run asks for (the hypotheses, before any launch)."""
from __future__ import annotations

import os

from contprobe import harness, runtime
from contprobe.launch import Plan
from contprobe.rerun import plan_reruns
from contprobe.image import Image
from contprobe.reports.junit import CaseResult
from contprobe.suite import Expectations


def plan(**kw) -> Plan:
    rt = runtime.Runtime("apptainer", "/usr/bin/apptainer", "1.4.5")
    return Plan(rt=rt, image=Image("x.sif", "/x.sif", "sif"), python="python3", spec_binds=[], spec_env={},
                nv=kw.get("nv", False), cleanenv=True, exp=Expectations(), harness_dir="/h", results_dir="/r")


def failed(probe, gotcha):
    return CaseResult(probe, "failed", 0.0, "m", gotcha, "fix")


def test_gpu_failures_inside_are_retried_with_nv_only_when_the_host_has_gpus():
    results = [failed("gpu.nvidia_smi", "nv-flag-missing"), failed("torch.cuda_available", "nv-flag-missing")]
    [rr] = plan_reruns(results, plan(), host_has_gpus=True)
    assert rr.nv is True and rr.change == "--nv" and rr.probes == ["gpu.nvidia_smi", "torch.cuda_available"]
    assert plan_reruns(results, plan(), host_has_gpus=False) == []
    assert plan_reruns(results, plan(nv=True), host_has_gpus=True) == []


def test_bind_env_and_user_site_hypotheses(tmp_path, monkeypatch):
    monkeypatch.setenv("CP_PLAN_VAR", "v")
    results = [failed(f"binds.expected[{tmp_path}:rw]", "bind-missing"),
               failed("binds.expected[/does/not/exist]", "bind-missing"),
               failed("env.expected[CP_PLAN_VAR]", "env-not-passed"),
               failed("env.expected[CP_NOT_ON_HOST]", "env-not-passed"),
               failed("env.user_site", "user-site-shadow"),
               failed("host.cache_dirs", "cache-in-home")]
    reruns = plan_reruns(results, plan(), host_has_gpus=False)
    changes = [r.change for r in reruns]
    # only what can pass on a re-run is tried: a path the host lacks, a variable it lacks are not
    assert changes == [f"-B {tmp_path}", "--env CP_PLAN_VAR=<host value>", "--env PYTHONNOUSERSITE=1"]
    assert reruns[0].binds == (str(tmp_path),)
    assert reruns[1].env == {"CP_PLAN_VAR": "v"} and "APPTAINERENV_CP_PLAN_VAR" in reruns[1].finding


def test_rerun_argv_targets_exact_probes_and_changes_one_thing():
    p = plan()
    argv = p.argv(results_dir="/rr", targets=(harness.node_id("binds.expected[/data]"),), binds=("/data",), single=True)
    assert argv[:2] == ["/usr/bin/apptainer", "exec"]
    assert f"{harness.PROBES}/test_binds.py::test_expected[/data]" in argv
    assert argv.count("-B") == 3 and "/data" in argv and "/rr:/.contprobe-out" in argv
    assert "--cleanenv" in argv  # what the user asked for stays as it was
    assert os.path.basename(argv[argv.index("-B") + 1]) == "data"
