"""The whole probe suite inside images at both ends of the Python range, for real: Debian bullseye
(Python 3.9, with Debian's pytest 6.0.2, older than the floor, and without pytest) and Debian trixie
(Python 3.13, with its pytest 8 and without), from ci/provision/py-range-images.sh. Each run passes or
skips with the right gotchas and no errors; where the image's pytest is missing or too old the
bundled one is used. Python 3.8 is checked statically (tests/test_probes_py38.py).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Dict, Iterator, List

import pytest

from tests.containers import image, run_as_user, user_dir

pytestmark = pytest.mark.slow

# image -> (Python minor version, where pytest comes from)
IMAGES = {
    "py39.sif": ("3.9", "brought by contprobe"),          # Debian's pytest 6.0.2 < 7: not used
    "py39-nopytest.sif": ("3.9", "brought by contprobe"),
    "py313.sif": ("3.13", "image"),
    "py313-nopytest.sif": ("3.13", "brought by contprobe"),
}
PASSED = {"env.user_site", "env.ld_preload"}
# what each group of probes needs and these images lack, as the catalog names it
SKIP_GOTCHA = {"allreduce": "mpi4py-missing", "mpi": "mpi4py-missing", "torch": "torch-missing",
               "horovod": "torch-missing", "nvcc": "nvcc-missing", "gpu.nvidia_smi": "nv-flag-missing",
               "gpu.ecc": "nv-flag-missing"}
# probes that only check an operator's expectation: skipped, without a gotcha, when none is given
NO_EXPECTATION = {"binds.expected[none]", "env.expected[none]", "env.proxy", "gpu.count"}
# with expectations the run does not meet (no --nv, a host directory not bound, a host variable not
# passed under --cleanenv), the failures and their names
FAILED = {"binds.expected[{data}]": "bind-missing", "env.expected[FOO_SETTING]": "env-not-passed",
          "env.proxy": "proxy-missing", "gpu.nvidia_smi": "nv-flag-missing", "gpu.count": "nv-flag-missing",
          "gpu.ecc": "nv-flag-missing"}


@pytest.fixture
def work() -> Iterator[str]:
    d = user_dir("contprobe-pyrange-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run(name: str, work: str, *extra: str, **env: str) -> Dict:
    path = str(image(name))
    out = os.path.join(work, "out")
    res = run_as_user(["run", path, "--out", out, "--json", f"{out}.json", "--cache-dir", work, *extra],
                      env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
                           "APPTAINER_CACHEDIR": os.path.join(work, "apptainer"), **env})
    assert "Traceback" not in res.err, res
    with open(f"{out}.json") as fh:
        doc = json.load(fh)
    with open(os.path.join(out, "launch.json")) as fh:
        doc["_record"] = json.load(fh)
    doc["_rc"] = res.rc
    return doc


def in_image(doc: Dict) -> List[Dict]:
    return [r for r in doc["results"] if not r["probe"].startswith(("host.", "pull.", "launch."))]


def skip_gotcha(probe: str) -> str:
    for prefix, gotcha in SKIP_GOTCHA.items():
        if probe == prefix or probe.startswith(prefix + "."):
            return gotcha
    return ""


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_whole_suite_passes_or_skips_with_its_gotchas(name: str, work: str):
    version, source = IMAGES[name]
    doc = run(name, work)
    ctx = doc["context"]
    assert ctx["python"].startswith(version + "."), ctx
    assert ctx["pytest_source"] == source, ctx
    rows = in_image(doc)
    assert len(rows) >= 30, [r["probe"] for r in rows]      # the whole suite ran, not a selection
    for r in rows:
        if r["probe"] in PASSED:
            assert r["outcome"] == "passed", r
        elif r["probe"] in NO_EXPECTATION:
            assert (r["outcome"], r["gotcha"]) == ("skipped", ""), r
        else:
            assert (r["outcome"], r["gotcha"]) == ("skipped", skip_gotcha(r["probe"])), r
    assert doc["verdict"] == "passed" and doc["_rc"] == 0, [r for r in doc["results"] if r["outcome"] != "skipped"]


@pytest.mark.parametrize("name", ["py39-nopytest.sif", "py313.sif"])
def test_failures_are_named_and_confirmed_by_a_rerun(name: str, work: str, request):
    # not under /tmp, /var/tmp or a home: Apptainer binds those by default
    data = tempfile.mkdtemp(prefix="contprobe-pyrange-", dir="/srv" if os.access("/srv", os.W_OK) else None)
    os.chmod(data, 0o755)
    request.addfinalizer(lambda: os.rmdir(data))
    doc = run(name, work, "--cleanenv", "--expect-bind", data, "--expect-env", "FOO_SETTING",
              "--expect-gpus", "1", "--expect-proxy", FOO_SETTING="on")
    assert doc["_rc"] == 1
    got = {r["probe"]: r for r in in_image(doc)}
    for probe, gotcha in FAILED.items():
        probe = probe.replace("{data}", data)
        assert (got[probe]["outcome"], got[probe]["gotcha"]) == ("failed", gotcha), got[probe]
    assert not [r for r in doc["results"] if r["outcome"] == "error" or r["gotcha"] == "unknown"]
    # the one-change re-runs ran inside the same image and its Python, and confirmed both causes
    reruns = {rr["change"]: rr for rr in doc["_record"]["reruns"]}
    assert any(data in change for change in reruns), reruns
    assert any("FOO_SETTING" in change for change in reruns), reruns
    assert all(rr["outcome"] == "passed" for rr in reruns.values()), reruns
