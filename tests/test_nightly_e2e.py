"""The nightly job script and the publish gate, end to end, with the real Apptainer and test images.

The PBS job script runs as it would in a job (PBS_NODEFILE, PBS_JOBID, PBS_O_WORKDIR set), as the
unprivileged user (root here lacks CAP_SYS_RESOURCE), against images from ci/provision/test-images.sh.
Skipped, with the reason, where apptainer, the user or the images are missing.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import junitparser
import pytest

from tests.conftest import ROOT, clean_env
from tests.containers import as_user, home, image, run_as_user, user_dir, user_python

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def py():
    image("base.sif")  # skips without apptainer, the user or the image
    py = user_python()
    ok = subprocess.run(as_user([py, "-c", "import junitparser, tabulate, pytest"]), stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, cwd="/tmp").returncode == 0
    if not ok:
        pytest.skip(f"the unprivileged user cannot run {py} with contprobe's dependencies "
                    "(bash ci/setup.sh, or set CONTPROBE_USER_PYTHON)")
    return py


def nightly(py: str, workdir: str, image_dir: str, **env: str) -> subprocess.CompletedProcess:
    nodefile = os.path.join(workdir, "nodefile")
    with open(nodefile, "w") as fh:
        fh.write(f"{socket.gethostname()}\n")
    e = clean_env(PYTHONPATH=str(ROOT), PBS_NODEFILE=nodefile, PBS_JOBID="4242.polaris-pbs-01",
                  PBS_O_WORKDIR=workdir, PBS_O_HOST="ci-runner", IMAGE_DIR=image_dir, SITE="generic", JOBS="2",
                  CONTPROBE=f"{py} -m contprobe", **env)
    e.pop("HOME", None)
    return subprocess.run(as_user(["env", f"HOME={home()}", "bash", str(ROOT / "ci" / "site" / "pbs" / "nightly.pbs")]),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e, cwd=workdir,
                          timeout=900)


def test_nightly_job_script_two_nights(py):
    work = user_dir("contprobe-nightly-")
    images = Path(work, "images")
    images.mkdir()
    for name in ("base.sif", "nopytest.sif"):
        os.symlink(image(name), images / name)
    shutil.chown(images, user="cpuser") if os.geteuid() == 0 else None

    first = nightly(py, work, str(images))
    assert first.returncode == 0, first.stdout[-3000:]
    out = first.stdout
    assert "2 image(s)" in out and "2 at a time" in out
    assert "progress: 2/2 done, 0 running, 0 failed" in out and "left" in out
    [night1] = sorted(p for p in Path(work, "contprobe-nightly").iterdir() if p.name != "latest")
    for name in ("index.html", "report.json", "report.md", "junit.xml"):
        assert (night1 / "report" / name).stat().st_size > 0, name
    doc = json.loads((night1 / "report" / "report.json").read_text())
    assert doc["verdict"] == "passed" and doc["context"]["images"] == ["base.sif", "nopytest.sif"]
    assert all(ln["command"] for ln in doc["launches"])            # launch.json from the real contprobe run

    # The second night a bind every image must have is missing: new failures against the first night.
    second = nightly(py, work, str(images), RUN_ARGS="--expect-bind /nonexistent-contprobe --no-rerun")
    assert second.returncode == 1, second.stdout[-3000:]
    night2 = Path(work, "contprobe-nightly", night1.name + ".2")
    assert Path(work, "contprobe-nightly", "latest").resolve() == night2.resolve()
    doc = json.loads((night2 / "report" / "report.json").read_text())
    rows = [r for r in doc["results"] if r["probe"] == "binds.expected[/nonexistent-contprobe]"]
    assert {r["image"] for r in rows} == {"base.sif", "nopytest.sif"}
    assert all(r["outcome"] == "failed" and r["gotcha"] == "bind-missing" and r["change"] == "new" for r in rows)
    assert doc["baseline"]["previous"] == [night1.name]
    xml = junitparser.JUnitXml.fromfile(str(night2 / "report" / "junit.xml"))
    assert sorted(s.name for s in xml) == ["base.sif", "nopytest.sif"] and all(s.failures == 1 for s in xml)
    html = (night2 / "report" / "index.html").read_text()
    assert "binds.expected[/nonexistent-contprobe]" in html and "Bind each file system you use" in html


def test_publish_gate(py, tmp_path):
    env = clean_env(CONTPROBE_USER_PYTHON=py)
    ok = run_as_user(["validate", str(image("base.sif")), "--site", "generic", "--out", user_dir() + "/gate"], env=env)
    assert ok.rc == 0, ok.out[-2000:] + ok.err[-2000:]
    bad = run_as_user(["validate", str(image("base.sif")), "--site", "generic", "--no-rerun",
                       "--expect-bind", "/nonexistent-contprobe", "--out", user_dir() + "/gate"], env=env)
    assert bad.rc == 1 and "bind-missing" in bad.out
