"""`contprobe build-check`: a real `apptainer build --fakeroot` on a sandbox base, then the probes in it."""
from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, clean_env, result_of
from tests.containers import IMAGES, as_user, image, run_as_user, user_dir, user_python

pytestmark = pytest.mark.slow

RECIPE_WITH_PACKAGE = """Bootstrap: localimage
From: {base}

%environment
    export CONTPROBE_E2E_PKG=six

%post
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-six
    apt-get clean
    rm -rf /var/lib/apt/lists/*
"""


@pytest.fixture(scope="module")
def base() -> str:
    image("base.sif")  # skips with the reason when the runtime or images are missing
    rootfs = IMAGES / "rootfs"
    if not (rootfs / "usr").is_dir():
        pytest.skip(f"{rootfs} sandbox not built (bash ci/provision/test-images.sh)")
    return str(rootfs)


def build_check(args, **kw):
    out = user_dir("contprobe-build-")
    res = run_as_user(["build-check", *args, "--out", os.path.join(out, "b"), "--json", os.path.join(out, "b.json"),
                       "--cache-dir", os.path.join(out, "cache"), "--tmp-dir", out], **kw)
    path = os.path.join(out, "b.json")
    return res, (json.load(open(path)) if os.path.exists(path) else None), os.path.join(out, "b")


def test_default_recipe_builds_and_probes_run_in_the_result(base):
    res, doc, out = build_check(["--base", base, "-m", "env"])
    assert res.rc == 0, res
    build = result_of(doc, "build.fakeroot")
    assert build["outcome"] == "passed" and build["duration_s"] > 0
    assert result_of(doc, "env.expected[CONTPROBE_BUILD_CHECK]")["outcome"] == "passed"
    assert "--fakeroot" in result_of(doc, "build.fakeroot")["message"]
    assert Path(out, "build-check.sif").is_file()


def test_recipe_that_installs_a_package(base):
    recipe = Path(user_dir("contprobe-recipe-")) / "six.def"
    recipe.write_text(RECIPE_WITH_PACKAGE.format(base=base))
    os.chmod(recipe, 0o644)
    res, doc, out = build_check(["--base", base, "--recipe", str(recipe), "-m", "env",
                                 "--expect-env", "CONTPROBE_E2E_PKG=six"])
    assert res.rc == 0, res
    assert result_of(doc, "env.expected[CONTPROBE_E2E_PKG]")["outcome"] == "passed"
    proc = subprocess.run(as_user(["apptainer", "exec", os.path.join(out, "build-check.sif"), "python3", "-c",
                                   "import six; print(six.__version__)"]),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/tmp")
    assert proc.returncode == 0, proc.stdout


@pytest.fixture
def user_without_subids():
    """A real user with no /etc/subuid or /etc/subgid range, as on a site that never granted one."""
    if os.geteuid() != 0:
        pytest.skip("creating a user needs root")
    name = "cpnosub"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
    for path in ("/etc/subuid", "/etc/subgid"):
        lines = Path(path).read_text().splitlines(keepends=True)
        Path(path).write_text("".join(l for l in lines if not l.startswith(f"{name}:")))
    return name


def test_no_subuid_range_is_named(base, user_without_subids):
    out = user_dir("contprobe-nosub-")
    os.chown(out, pwd.getpwnam(user_without_subids).pw_uid, -1)
    env = clean_env(PYTHONPATH=str(ROOT))
    proc = subprocess.run(["runuser", "-u", user_without_subids, "--", user_python(), "-m", "contprobe",
                           "build-check", "--base", base, "--out", f"{out}/b", "--json", f"{out}/b.json",
                           "--cache-dir", f"{out}/cache", "--tmp-dir", out, "-m", "env"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=out, timeout=600)
    assert proc.returncode == 1, proc.stderr
    doc = json.load(open(f"{out}/b.json"))
    assert result_of(doc, "host.subuid")["gotcha"] == "subuid-range-small"
    build = result_of(doc, "build.fakeroot")
    assert build["outcome"] == "failed" and build["gotcha"] == "subuid-range-small"
    assert "usermod --add-subuids" in build["fix"]


def test_missing_recipe_is_bad_input(base):
    res = run_as_user(["build-check", "--base", base, "--recipe", "/nonexistent.def"])
    assert res.rc == 2 and res.err.count("\n") == 1 and "no such file" in res.err, res


def test_site_proxy_ca_missing_in_build_is_named(base):
    """A %post that fetches over HTTPS fails the way it does behind a TLS-intercepting site proxy:
    the image's CA bundle lacks the proxy's CA (the CI machine's network is such a proxy)."""
    recipe = Path(user_dir("contprobe-recipe-")) / "https.def"
    recipe.write_text(f"Bootstrap: localimage\nFrom: {base}\n\n%post\n"
                      "    python3 -c \"import urllib.request; urllib.request.urlopen('https://pypi.org/simple/six/', "
                      "timeout=30)\"\n")
    os.chmod(recipe, 0o644)
    res, doc, out = build_check(["--base", base, "--recipe", str(recipe), "-m", "env"])
    build = result_of(doc, "build.fakeroot")
    if build["outcome"] == "passed":
        pytest.skip("this machine's HTTPS is not intercepted: nothing to diagnose")
    assert res.rc == 1, res
    assert build["gotcha"] == "proxy-ca-missing", build
    assert "PIP_CERT" in build["fix"] or "ca-certificates" in build["fix"]
