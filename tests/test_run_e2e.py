"""`contprobe run` on the real Apptainer with real images (ci/provision/test-images.sh)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from contprobe import pycache
from tests.conftest import clean_env, result_of
from tests.containers import as_user, chown_tree, home, image, run_as_user, user_dir

pytestmark = pytest.mark.slow


def run_json(args, env=None):
    out = user_dir()
    res = run_as_user(["run", *args, "--out", os.path.join(out, "run"), "--json", os.path.join(out, "run.json")], env=env)
    doc = json.load(open(os.path.join(out, "run.json"))) if os.path.exists(os.path.join(out, "run.json")) else None
    return res, doc, os.path.join(out, "run")


def test_all_pass_with_reproducer(host_dir):
    img = image("base.sif")
    res, doc, out = run_json([str(img), "-B", host_dir, "--expect-bind", f"{host_dir}:rw"])
    assert res.rc == 0, res
    assert doc["verdict"] == "passed"
    ctx = doc["context"]
    assert ctx["runtime"] == "apptainer" and ctx["runtime_version"]
    assert ctx["image_digest"].startswith("sha256:") and len(ctx["image_digest"]) == 71
    assert ctx["pytest_source"] == "image"
    assert result_of(doc, f"binds.expected[{host_dir}:rw]")["outcome"] == "passed"
    assert "verdict: PASSED" in res.out
    # The probes' bytecode went to the operator's cache for this image (the image itself is read-only).
    cached = Path(home(), ".cache", "contprobe", "pycache", pycache.image_key(str(img)))
    assert any(cached.rglob("test_binds*.pyc")), "no bytecode cached for the probes"
    # The report's command is a working copy-paste reproducer.
    launch = json.load(open(os.path.join(out, "launch.json")))
    words = shlex.split(launch["command"])
    assigns = words[:words.index(launch["argv"][0])]
    argv = words[len(assigns):]
    assert argv == launch["argv"] and argv[1] == "exec"
    assert all(a.startswith("APPTAINERENV_") for a in assigns), assigns   # values travel in the environment
    for f in Path(out, "ranks").glob("*.xml"):
        f.unlink()
    proc = subprocess.run(as_user(["env", *assigns, *argv]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=clean_env(), cwd="/tmp", timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert len(list(Path(out, "ranks").glob("junit-r00000-*.xml"))) == 1


def test_image_without_pytest_gets_one_brought():
    img = image("nopytest.sif")
    res, doc, _ = run_json([str(img), "-m", "env or binds"])
    assert res.rc == 0, res
    assert doc["context"]["pytest_source"] == "brought by contprobe"
    assert doc["context"]["pytest"] == "8.3.5"
    # and the image really has none of its own
    probe = subprocess.run(as_user(["apptainer", "exec", str(img), "python3", "-c", "import pytest"]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/tmp")
    assert probe.returncode != 0 and "No module named 'pytest'" in probe.stdout


def test_missing_bind_is_diagnosed_by_rerun(host_dir):
    res, doc, _ = run_json([str(image("base.sif")), "--expect-bind", host_dir, "-m", "binds"])
    assert res.rc == 1, res
    r = result_of(doc, f"binds.expected[{host_dir}]")
    assert r["outcome"] == "failed" and r["gotcha"] == "bind-missing"
    assert f"missing -B {host_dir}" in r["message"]
    [rerun] = doc["reruns"]
    assert rerun["outcome"] == "passed" and rerun["change"] == f"-B {host_dir}"
    assert f"-B {host_dir}" in rerun["command"]
    assert "bind-missing" in {g["id"] for g in doc["gotchas"]}


def test_missing_variable_is_diagnosed_by_rerun():
    env = clean_env(CP_E2E_SETTING="on")
    res, doc, _ = run_json([str(image("base.sif")), "--cleanenv", "--expect-env", "CP_E2E_SETTING=on", "-m", "env"],
                           env=env)
    assert res.rc == 1, res
    r = result_of(doc, "env.expected[CP_E2E_SETTING]")
    assert r["gotcha"] == "env-not-passed"
    [rerun] = doc["reruns"]
    assert rerun["outcome"] == "passed"
    assert "APPTAINERENV_CP_E2E_SETTING" in rerun["finding"]


def test_variable_passes_without_cleanenv():
    """Nothing is switched on silently: without --cleanenv the host variable reaches the probes."""
    res, doc, out = run_json([str(image("base.sif")), "--expect-env", "CP_E2E_SETTING=on-4242", "-m", "env"],
                             env=clean_env(CP_E2E_SETTING="on-4242"))
    assert res.rc == 0, res
    # The expected value reached the probe through the environment: nothing on the command line that
    # `ps` shows (the shell-quoted reproducer keeps it in an APPTAINERENV_ assignment in front).
    argv = json.load(open(os.path.join(out, "launch.json")))["argv"]
    assert "--expect-env" in argv and not any("on-4242" in a for a in argv), argv
    assert "--cleanenv" not in doc["context"]["command"]
    assert "PYTHONNOUSERSITE" not in doc["context"]["command"]


@pytest.fixture
def user_site_leak():
    """A module in the user's ~/.local that shadows one the image ships (bound in with $HOME)."""
    img = image("base.sif")
    listing = subprocess.run(as_user(["apptainer", "exec", str(img), "python3", "-c",
                                      "import iniconfig, os; print(os.path.dirname(iniconfig.__file__))"]),
                             stdout=subprocess.PIPE, text=True, cwd="/tmp")
    assert listing.returncode == 0
    site = Path(home()) / ".local" / "lib" / "python3.11" / "site-packages"
    created = not (Path(home()) / ".local").exists()
    site.mkdir(parents=True, exist_ok=True)
    chown_tree(str(Path(home()) / ".local"))
    # a copy of the image's own iniconfig: it works, but it is not the image's
    pkg = site / "iniconfig"
    subprocess.run(as_user(["apptainer", "exec", "-B", f"{site}", str(img), "cp", "-r",
                            listing.stdout.strip(), str(pkg)]), check=True, cwd="/tmp")
    yield img
    shutil.rmtree(Path(home()) / ".local" if created else pkg, ignore_errors=True)


def test_user_site_leak_is_diagnosed_by_rerun(user_site_leak):
    res, doc, _ = run_json([str(user_site_leak), "-m", "env"])
    assert res.rc == 1, res
    r = result_of(doc, "env.user_site")
    assert r["gotcha"] == "user-site-shadow" and "iniconfig" in r["message"]
    [rerun] = doc["reruns"]
    assert rerun["change"] == "--env PYTHONNOUSERSITE=1" and rerun["outcome"] == "passed"
    assert rerun["finding"] == "passes without user site-packages"


def bad_input(args):
    res = run_as_user(args)
    assert res.rc == 2, res
    lines = [l for l in res.err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in res.err, res
    return lines[0]


def test_nonexistent_image():
    image("base.sif")
    assert "does not exist" in bad_input(["run", "/nonexistent/x.sif"])


def test_file_that_is_not_an_image(tmp_path):
    image("base.sif")
    f = user_dir() + "/notes.sif"
    Path(f).write_text("just text\n" * 100)
    assert "not a SIF image" in bad_input(["run", f])


def test_truncated_sif():
    img = image("base.sif")
    f = user_dir() + "/truncated.sif"
    with open(img, "rb") as src, open(f, "wb") as dst:
        dst.write(src.read(os.path.getsize(img) // 2))
    assert "truncated SIF" in bad_input(["run", f])


def test_bind_source_that_does_not_exist():
    line = bad_input(["run", str(image("base.sif")), "-B", "/nonexistent/data"])
    assert "/nonexistent/data does not exist" in line


def test_sandbox_directory_image():
    image("base.sif")
    sandbox = Path(os.environ.get("CONTPROBE_IMAGES", "/var/tmp/contprobe-images")) / "rootfs"
    if not (sandbox / "usr").is_dir():
        pytest.skip(f"{sandbox} not built (bash ci/provision/test-images.sh)")
    res, doc, _ = run_json([str(sandbox), "-m", "env"])
    assert res.rc == 0, res
    assert doc["context"]["image_kind"] == "sandbox" and doc["context"]["image_digest"] == ""
    assert doc["context"]["image"] == str(sandbox)


def test_missing_gpu_blames_nv_only_when_nv_was_not_given():
    """Without --nv a missing GPU is nv-flag-missing; with --nv on a host without GPUs it is not."""
    img = str(image("base.sif"))
    res, doc, _ = run_json([img, "-m", "gpu", "--expect-gpus", "1"])
    assert res.rc == 1, res
    assert result_of(doc, "gpu.nvidia_smi")["gotcha"] == "nv-flag-missing"
    assert doc["reruns"] == []  # this host has no GPU: a --nv re-run could not pass, so none is tried
    res, doc, _ = run_json([img, "--nv", "-m", "gpu", "--expect-gpus", "1"])
    assert res.rc == 1, res
    assert "--nv" in doc["context"]["command"].split()
    assert result_of(doc, "gpu.nvidia_smi")["gotcha"] == "no-gpu-visible"
