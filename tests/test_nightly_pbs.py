"""The PBS job script takes the site's module line, proxy, scratch and image directory from the site
profile (`contprobe sites NAME`), never from a copy of its own: issue 8 found the script and
polaris.toml disagreeing on a module version.

The profile's job set-up comes from `contprobe sites NAME --shell`. The script runs for real under bash; `contprobe nightly` at its end is replaced by a recorder (the
nightly itself is tested end to end in test_nightly_e2e.py), and `module` is a shell function that
records its arguments, as Lmod's is a shell function.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contprobe import site as sites
from tests.conftest import ROOT, clean_env

RECORDER = '''import json, os, subprocess, sys
if sys.argv[1] == "sites":
    sys.exit(subprocess.run([sys.executable, "-m", "contprobe", *sys.argv[1:]]).returncode)
keep = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "IMAGE_DIR", "APPTAINER_TMPDIR",
        "APPTAINER_CACHEDIR")
with open(os.environ["RECORD"], "w") as fh:
    json.dump({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in keep}}, fh)
'''


def job(tmp_path: Path, site: str, **env: str) -> tuple:
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    record, modules = tmp_path / "record.json", tmp_path / "modules.log"
    e = clean_env(PYTHONPATH=str(ROOT), SITE=site, RECORD=str(record), PBS_O_WORKDIR=str(tmp_path),
                  CONTPROBE=f"{sys.executable} {recorder}", USER="tester",
                  **{"BASH_FUNC_module%%": f'() {{ echo "$*" >> {modules}; }}'}, **env)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "IMAGE_DIR", "APPTAINER_TMPDIR",
                 "APPTAINER_CACHEDIR", "CONTPROBE_SETUP"):
        if name not in env:
            e.pop(name, None)
    proc = subprocess.run(["bash", str(ROOT / "ci" / "site" / "pbs" / "nightly.pbs")], env=e, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    rec = json.loads(record.read_text()) if record.exists() else None
    lines = modules.read_text().splitlines() if modules.exists() else []
    return proc, rec, lines


def test_polaris_settings_come_from_its_profile(tmp_path):
    prof = sites.load("polaris").resolved()
    proc, rec, modules = job(tmp_path, "polaris")
    assert proc.returncode == 0, proc.stdout
    assert modules == [part.strip().split(None, 1)[1] for part in prof["runtime"]["module"].split(";")]
    assert rec["env"]["HTTP_PROXY"] == rec["env"]["https_proxy"] == prof["proxy"]["url"] != ""
    image_dir, scratch = prof["paths"]["image_dir"], prof["paths"]["scratch"]
    assert rec["env"]["IMAGE_DIR"] == image_dir != ""
    assert rec["env"]["APPTAINER_TMPDIR"] == f"{scratch}/tester/apptainer-tmp"
    assert rec["env"]["APPTAINER_CACHEDIR"] == f"{scratch}/tester/apptainer-cache"
    argv = rec["argv"]
    assert argv[:2] == ["nightly", image_dir] and argv[argv.index("--site") + 1] == "polaris"


def test_operator_settings_win_over_the_profile(tmp_path):
    proc, rec, modules = job(tmp_path, "polaris", HTTP_PROXY="http://127.0.0.1:9", IMAGE_DIR=str(tmp_path),
                             CONTPROBE_SETUP="module load my-apptainer")
    assert proc.returncode == 0, proc.stdout
    assert modules[-1] == "load my-apptainer"                       # after the profile's own lines
    assert rec["env"]["HTTP_PROXY"] == "http://127.0.0.1:9" and rec["env"]["IMAGE_DIR"] == str(tmp_path)


def test_generic_site_adds_nothing(tmp_path):
    proc, rec, modules = job(tmp_path, "generic", IMAGE_DIR=str(tmp_path))
    assert proc.returncode == 0, proc.stdout
    assert modules == [] and rec["env"]["HTTP_PROXY"] is None and rec["env"]["APPTAINER_TMPDIR"] is None


@pytest.mark.parametrize("site", ["no-such-site", "../../etc/passwd"])
def test_unknown_site_is_refused_before_anything_runs(tmp_path, site):
    proc, rec, modules = job(tmp_path, site)
    assert proc.returncode == 2 and rec is None and modules == []
    assert "no usable site profile" in proc.stdout


def test_sites_shell_needs_a_name_and_keeps_podman_storage_alone():
    bare = subprocess.run([sys.executable, "-m", "contprobe", "sites", "--shell"], capture_output=True, text=True,
                          env=clean_env(PYTHONPATH=str(ROOT)))
    assert bare.returncode == 2 and "--shell needs a site NAME" in bare.stderr
    # podman's cache variable names a storage.conf file, not a directory: nothing to set on scratch
    pm = subprocess.run([sys.executable, "-m", "contprobe", "sites", "perlmutter", "--shell"], capture_output=True,
                        text=True, env=clean_env(PYTHONPATH=str(ROOT)))
    assert pm.returncode == 0 and "CONTAINERS_STORAGE_CONF" not in pm.stdout
