"""`contprobe doctor` end to end: the real CLI in a child process, its JSON contract, files and exit codes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import junitparser
import pytest

from contprobe.inimage import catalog
from conftest import ROOT, CLIResult, clean_env, path_without_nvidia_smi, result_of, run_cli, standin_env

OUTCOMES = {"passed", "failed", "skipped", "error"}
SECRET = "supersecret123"
PROXY_PW = "pw4proxy"


def doctor(*args, env=None, **kw) -> CLIResult:
    return run_cli(["doctor", *args], env=env if env is not None else standin_env(None), **kw)


def doctor_json(*args, env=None, **kw):
    r = doctor("--json", "-", *args, env=env, **kw)
    assert r.rc in (0, 1), r
    return r, r.json()


# ---- the contract ----------------------------------------------------------------------------------
def test_json_contract_and_exit_0(tmp_path):
    bound = tmp_path / "data"
    bound.mkdir()
    r, doc = doctor_json("-m", "env or binds or gpu", "--expect-bind", f"{bound}:rw", "--expect-env", "HOME")
    assert r.rc == 0, r
    assert {"verdict", "context", "results", "gotchas", "lost", "incomplete", "reruns"} <= set(doc)
    assert doc["verdict"] == "passed"
    assert isinstance(doc["context"], dict) and doc["context"]["mode"] == "doctor"
    for key in ("hostname", "image", "python", "rank", "size", "command"):
        assert key in doc["context"], key
    assert doc["results"]
    for res in doc["results"]:
        assert set(res) >= {"probe", "outcome", "duration_s", "message", "gotcha", "fix"}, res
        assert res["outcome"] in OUTCOMES
        assert isinstance(res["duration_s"], (int, float)) and res["duration_s"] >= 0
    assert result_of(doc, f"binds.expected[{bound}:rw]")["outcome"] == "passed"
    assert result_of(doc, "env.expected[HOME]")["outcome"] == "passed"
    # Missing hardware without an expectation is a skip that names its reason, not a failure.
    smi = result_of(doc, "gpu.nvidia_smi")
    assert smi["outcome"] == "skipped" and smi["gotcha"] == "no-gpu-visible" and "nvidia-smi not found" in smi["message"]
    assert doc["gotchas"] == []
    # With the JSON on stdout the table went to stderr.
    assert "gpu.nvidia_smi" in r.err and "verdict: PASSED" in r.err


def test_failure_exit_1_names_gotcha_and_fix(tmp_path):
    r, doc = doctor_json("-m", "binds or gpu", "--expect-bind", str(tmp_path / "absent"), "--expect-gpus", "1")
    assert r.rc == 1, r
    assert doc["verdict"] == "failed"
    b = result_of(doc, f"binds.expected[{tmp_path / 'absent'}]")
    assert b["outcome"] == "failed" and b["gotcha"] == "bind-missing"
    assert b["fix"] == catalog.get("bind-missing").fix_line and "does not exist" in b["message"]
    g = result_of(doc, "gpu.nvidia_smi")
    assert g["outcome"] == "failed" and g["gotcha"] == "no-gpu-visible"
    ids = [x["id"] for x in doc["gotchas"]]
    assert "bind-missing" in ids and "no-gpu-visible" in ids
    for entry in doc["gotchas"]:
        assert set(entry) == {"id", "title", "cause", "fix", "source"} and entry["fix"] and entry["source"]


def test_table_and_output_files(tmp_path):
    j, m, js = tmp_path / "out" / "r.xml", tmp_path / "out" / "r.md", tmp_path / "r.json"
    r = doctor("-m", "env", "--junit", str(j), "--markdown", str(m), "--json", str(js))
    assert r.rc == 0, r
    # The human table on stdout: the same as `contprobe report` prints for the same directory.
    header = [line for line in r.out.splitlines() if line.startswith("probe")][0]
    assert header.split()[:3] == ["probe", "ranks", "gotcha"] and "fix" in header
    assert "env.ld_preload" in r.out
    doc = json.loads(js.read_text())
    assert doc["verdict"] == "passed"
    xml = junitparser.JUnitXml.fromfile(str(j))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    # The merged JUnit `contprobe report` writes: a suite per image, a case per probe.
    assert {p.name for p in suites[0].properties()} >= {"image", "night", "site"}
    assert "env.ld_preload" in {c.name for c in suites[0]}
    assert m.read_text().startswith("# contprobe doctor: passed")


def test_k_selects_probes():
    r, doc = doctor_json("-k", "ld_preload")
    assert [x["probe"] for x in doc["results"]] == ["env.ld_preload"]


# ---- bad input: one line, exit 2, no traceback ------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["--expect-gpus", "-1"],
    ["--expect-gpus", "many"],
    ["--expect-bind", "relative/path"],
    ["--expect-bind", "/x:bogus"],
    ["--expect-env", "=X"],
    ["-m", "bogus"],
    ["-m", "gpu and nonsense"],
    ["-k", "no_probe_has_this_name"],
    ["--no-such-option"],
])
def test_bad_usage(args):
    r = doctor(*args)
    assert r.rc == 2, r
    assert r.err.count("\n") == 1 and r.err.startswith("contprobe: error:"), r
    assert "Traceback" not in r.err + r.out
    assert r.out == ""


def test_bad_usage_names_the_problem():
    assert "'bogus'" in doctor("-m", "bogus").err
    assert "many" in doctor("--expect-gpus", "many").err
    assert "relative/path" in doctor("--expect-bind", "relative/path").err


# ---- redaction -------------------------------------------------------------------------------------
def test_secrets_never_in_any_output(tmp_path):
    env = standin_env(None, MY_API_TOKEN=SECRET, HTTPS_PROXY=f"http://user:{PROXY_PW}@proxy:3128",
                      DB_PASSWORD=SECRET + "x")
    files = [tmp_path / "r.json", tmp_path / "r.xml", tmp_path / "r.md"]
    r = doctor("-m", "env", "--expect-proxy", "--expect-env", "MY_API_TOKEN=other-value",
               "--expect-env", "HTTPS_PROXY=http://other", "--json", str(files[0]), "--junit", str(files[1]),
               "--markdown", str(files[2]), env=env)
    assert r.rc == 1, r  # the proxy and env expectations fail
    texts = [f.read_text() for f in files] + [r.out, r.err]
    for t in texts:   # neither the actual values nor the expected ones (an expectation can be a secret too)
        assert SECRET not in t and PROXY_PW not in t and "other-value" not in t and "http://other" not in t
    doc = json.loads(files[0].read_text())
    assert "differs from the expected value" in result_of(doc, "env.expected[MY_API_TOKEN]")["message"]
    assert result_of(doc, "env.proxy")["gotcha"] == "proxy-missing"


# ---- diagnoses from real components ----------------------------------------------------------------
def test_env_expectation_missing():
    r, doc = doctor_json("-m", "env", "--expect-env", "CONTPROBE_SURELY_UNSET")
    assert r.rc == 1
    res = result_of(doc, "env.expected[CONTPROBE_SURELY_UNSET]")
    assert res["outcome"] == "failed" and res["gotcha"] == "env-expectation"


def test_ld_preload_leak():
    env = standin_env(None, LD_PRELOAD="/nonexistent/libxalt_init.so")
    r, doc = doctor_json("-m", "env", env=env)
    assert r.rc == 1, r
    res = result_of(doc, "env.ld_preload")
    assert res["outcome"] == "failed" and res["gotcha"] == "ld-preload-leak"
    assert "/nonexistent/libxalt_init.so" in res["message"]


def test_bind_missing_and_not_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r, doc = doctor_json("-m", "binds", "--expect-bind", str(tmp_path / "nope"), "--expect-bind", str(f))
    assert r.rc == 1
    assert result_of(doc, f"binds.expected[{tmp_path / 'nope'}]")["gotcha"] == "bind-missing"
    res = result_of(doc, f"binds.expected[{f}]")
    assert res["gotcha"] == "bind-missing" and "not a directory" in res["message"]


def test_bind_read_only(tmp_path):
    """A :rw bind on a read-only mount fails bind-not-writable (root ignores mode bits, not a ro mount)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if not shutil.which("unshare") or subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro}"],
            stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("cannot make a read-only bind mount here (needs root and mount namespaces)")
    js = tmp_path / "r.json"
    cmd = (f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
           f"exec {sys.executable} -m contprobe doctor -m binds --expect-bind {ro}:rw --expect-bind {ro} "
           f"--json {js}")
    p = subprocess.run(["unshare", "-m", "sh", "-c", cmd], env=standin_env(None), cwd=str(ROOT),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    doc = json.loads(js.read_text())
    assert result_of(doc, f"binds.expected[{ro}]")["outcome"] == "passed"  # readable
    failed = result_of(doc, f"binds.expected[{ro}:rw]")
    assert failed["outcome"] == "failed" and failed["gotcha"] == "bind-not-writable"
    assert "Read-only file system" in failed["message"]


def test_repeated_and_mixed_bind_expectations_have_distinct_ids(tmp_path):
    r, doc = doctor_json("-m", "binds", "--expect-bind", str(tmp_path), "--expect-bind", str(tmp_path),
                         "--expect-bind", f"{tmp_path}:rw")
    assert sorted(x["probe"] for x in doc["results"]) == [f"binds.expected[{tmp_path}:rw]",
                                                          f"binds.expected[{tmp_path}]"]


def _venv_with_user_site(tmp_path: Path) -> str:
    """A venv whose user site is on (system site packages), seeing this Python's packages through a .pth."""
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    site_dir = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    mine = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(ROOT)}
    Path(site_dir, "contprobe-test.pth").write_text("\n".join(sorted(mine)) + "\n")
    return py


def test_user_site_shadows_installed_package(tmp_path):
    import tabulate
    py = _venv_with_user_site(tmp_path)
    home = tmp_path / "home"
    ver = "python%d.%d" % sys.version_info[:2]
    user_site = home / ".local" / "lib" / ver / "site-packages"
    user_site.mkdir(parents=True)
    src = Path(tabulate.__file__)
    # The user's own (older) copy of tabulate in ~/.local, as `pip install --user` leaves it.
    if src.name == "__init__.py":
        shutil.copytree(src.parent, user_site / "tabulate")
    else:
        shutil.copy(src, user_site / "tabulate.py")
    env = standin_env(None, HOME=str(home))
    env.pop("PYTHONNOUSERSITE", None)
    r, doc = doctor_json("-m", "env", env=env, python=py)
    assert r.rc == 1, r
    res = result_of(doc, "env.user_site")
    assert res["outcome"] == "failed" and res["gotcha"] == "user-site-shadow", res
    assert "tabulate" in res["message"]
    # The same venv without the shadow passes: the probe reacts to the shadow, not to the venv.
    shutil.rmtree(home / ".local")
    r, doc = doctor_json("-m", "env", env=env, python=py)
    assert result_of(doc, "env.user_site")["outcome"] == "passed"


# ---- nvidia-smi: recorded real outputs through the stand-in ----------------------------------------
GPU_K = ["-m", "gpu", "-k", "nvidia_smi or count"]


def test_recorded_h200_node_passes_with_matching_expectation():
    r, doc = doctor_json(*GPU_K, "--expect-gpus", "8", env=standin_env("h200nvl-x8"))
    assert r.rc == 0, r
    assert result_of(doc, "gpu.nvidia_smi")["outcome"] == "passed"
    assert result_of(doc, "gpu.count")["outcome"] == "passed"


def test_recorded_h200_node_count_low():
    r, doc = doctor_json(*GPU_K, "--expect-gpus", "16", env=standin_env("h200nvl-x8"))
    assert r.rc == 1
    res = result_of(doc, "gpu.count")
    assert res["gotcha"] == "gpu-count-low" and "expected 16 GPUs, found 8" in res["message"]


@pytest.mark.parametrize("fixture, gotcha", [
    ("driver-not-loaded", "nvidia-driver-not-loaded"),
    ("version-mismatch", "nvml-version-mismatch"),
])
def test_recorded_driver_failures(fixture, gotcha):
    r, doc = doctor_json(*GPU_K, env=standin_env(fixture))
    assert r.rc == 1, r
    res = result_of(doc, "gpu.nvidia_smi")
    assert res["outcome"] == "failed" and res["gotcha"] == gotcha
    assert res["fix"] == catalog.get(gotcha).fix_line
    assert [g["id"] for g in doc["gotchas"]] == [gotcha]


def test_recorded_no_devices_is_skip_unless_expected():
    r, doc = doctor_json(*GPU_K, env=standin_env("no-devices"))
    assert r.rc == 0, r
    res = result_of(doc, "gpu.nvidia_smi")
    assert res["outcome"] == "skipped" and res["gotcha"] == "gpu-count-low"
    r, doc = doctor_json(*GPU_K, "--expect-gpus", "2", env=standin_env("no-devices"))
    assert r.rc == 1
    assert result_of(doc, "gpu.nvidia_smi")["gotcha"] == "gpu-count-low"


def test_standin_refuses_what_was_not_recorded():
    env = standin_env("h200nvl-x8")
    p = subprocess.run(["nvidia-smi", "--query-gpu=index,ecc.errors.uncorrected.volatile.total", "--format=csv"],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.returncode == 99 and p.stdout == "" and "no recording" in p.stderr
    p = subprocess.run(["nvidia-smi", "--query-gpu=index,name,uuid", "--format=csv,noheader"], env=env,
                       stdout=subprocess.PIPE, text=True)
    assert p.returncode == 0 and p.stdout.splitlines()[0].startswith("0, NVIDIA H200 NVL, GPU-f5ec9d38")
