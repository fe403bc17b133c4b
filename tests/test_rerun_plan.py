"""Which one-change re-runs a failed container run asks for: only from the operator's expectations."""
from __future__ import annotations

from contprobe import harness
from contprobe.image import Image
from contprobe.inimage.options import BindExpectation, EnvExpectation
from contprobe.launch import Plan
from contprobe.model import Case
from contprobe.rerun import plan_reruns
from contprobe.runtimes.apptainer import Apptainer
from contprobe.suite import Expectations


def plan(**kw) -> Plan:
    return Plan(rt=Apptainer("/usr/bin/apptainer", "1.4.5"), image=Image("x.sif", "/x.sif", "sif"),
                python="python3", binds=[], env={}, nv=kw.get("nv", False), cleanenv=True,
                exp=kw.get("exp", Expectations()), harness_dir="/h", results_dir="/r")


def failed(probe, gotcha):
    return Case(probe, "failed", 0.0, "m", gotcha, "fix")


def test_gpu_failures_inside_are_retried_with_nv_only_when_the_host_has_gpus():
    results = [failed("gpu.nvidia_smi", "nv-flag-missing"), failed("torch.cuda_available", "nv-flag-missing")]
    [rr] = plan_reruns(results, plan(), host_has_gpus=True)
    assert rr.nv is True and rr.change == "--nv" and rr.probes == ["gpu.nvidia_smi", "torch.cuda_available"]
    assert plan_reruns(results, plan(), host_has_gpus=False) == []
    assert plan_reruns(results, plan(nv=True), host_has_gpus=True) == []


def test_hypotheses_come_from_the_operators_expectations_only(tmp_path):
    exp = Expectations(binds=[BindExpectation(str(tmp_path), True), BindExpectation("/does/not/exist", False)],
                       envs=[EnvExpectation("CP_PLAN_VAR", None), EnvExpectation("CP_NOT_ON_HOST", None),
                             EnvExpectation("HF_TOKEN", None)])
    host_env = {"CP_PLAN_VAR": "v", "HF_TOKEN": "hf_secretsecret"}
    results = [failed(f"binds.expected[{tmp_path}:rw]", "bind-missing"),
               failed("binds.expected[/does/not/exist]", "bind-missing"),
               failed("binds.expected[/etc]", "bind-missing"),          # the image's own claim: no expectation
               failed("env.expected[CP_PLAN_VAR]", "env-not-passed"),
               failed("env.expected[CP_NOT_ON_HOST]", "env-not-passed"),
               failed("env.expected[HF_TOKEN]", "env-not-passed"),      # secret-named: never passed
               failed("env.expected[HOME]", "env-not-passed"),          # not expected by the operator
               failed("env.user_site", "user-site-shadow"),
               failed("host.cache_dirs", "cache-in-home")]
    reruns = plan_reruns(results, plan(exp=exp), host_has_gpus=False, host_env=host_env)
    changes = [r.change for r in reruns]
    # only what can pass on a re-run is tried: a path the host lacks, a variable it lacks are not
    assert changes == [f"-B {tmp_path}", "--env CP_PLAN_VAR=<host value>", "--env PYTHONNOUSERSITE=1"]
    assert reruns[0].binds == (f"{tmp_path}:{tmp_path}:rw",)
    assert reruns[1].env == {"CP_PLAN_VAR": "v"} and "APPTAINERENV_CP_PLAN_VAR" in reruns[1].finding
    assert not any("hf_secret" in str(r) for r in reruns)


def test_rerun_argv_targets_exact_probes_and_passes_values_outside_argv():
    p = plan()
    argv, env = p.argv(results_dir="/rr", targets=(harness.node_id("binds.expected[/data]"),), binds=("/data",),
                       env={"FOO": "secret-value"}, single=True)
    assert argv[:2] == ["/usr/bin/apptainer", "exec"]
    assert f"{harness.PROBES}/test_binds.py::test_expected[/data]" in argv
    assert argv.count("-B") == 3 and "/data" in argv and "/rr:/.contprobe-out" in argv
    assert "--cleanenv" in argv  # what the user asked for stays as it was
    assert env == {"APPTAINERENV_FOO": "secret-value"} and not any("secret-value" in a for a in argv)
