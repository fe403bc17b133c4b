"""A hostile image on the real runtime: `contprobe run` and `contprobe report` stay correct, bounded
and fast, and a host secret reaches no output, argv or host-written file.

hostile.sif (ci/provision/test-images.sh, payload ci/provision/hostile/contprobe_hostile.py) plants,
when its probes end: a FIFO and /dev/zero links named like rank files, five links to '.', a link to
/etc, a forged dated directory whose launch record claims victim.sif passed, C1 terminal escapes
(title, clear screen, OSC 52 clipboard, a fake green verdict) and a bidi override, a newline in a
probe id, forged `env.expected[HF_TOKEN]` and `binds.expected[/etc]` failures, a 200 MB failure
text, a journal with NaN, ESC and a claimed world size of 99999999999, and the HF_TOKEN it reads
from its environment. The image is never modified; each run gets a fresh results directory.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ROOT, clean_env
from tests.containers import as_user, home, image, user_dir, user_python
from tests.launchwatch import LaunchWatch, wait_until_gone

pytestmark = pytest.mark.slow

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
RUN_TIMEOUT_S = 300              # bounds on a hang, not speed targets (ci/bench/bench_reliability.py)
REPORT_TIMEOUT_S = 120
REPORT_MEMORY = 2 << 30          # address-space limit of `contprobe report` (prlimit)
PLANTED = ["junit-r00001-fifo.xml", "junit-r00002-zero.xml", "partial-r00002-zero.jsonl",
           "junit-r00003-huge.xml", "9999-12-31/victim/launch.json", "9999-12-31/victim/ranks/junit-r00000-victim.xml"]


def contprobe(args, env_extra, cwd, limit_memory=False):
    """`contprobe ARGS` as the unprivileged user, watched from outside; (rc, stdout, stderr, watch, seconds)."""
    tag = f"CONTPROBE_TEST_TAG={uuid.uuid4().hex}"
    e = clean_env(PYTHONPATH=str(ROOT), **env_extra)
    e.pop("HOME", None)
    k, v = tag.split("=", 1)
    e[k] = v
    argv = ["env", f"HOME={home()}", user_python(), "-m", "contprobe", *args]
    if limit_memory:
        argv = ["prlimit", f"--as={REPORT_MEMORY}", "--", *argv]
    t0 = time.monotonic()
    p = subprocess.Popen(as_user(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e, cwd=cwd)
    watch = LaunchWatch(p.pid, tag.encode()).start()
    try:
        out, err = p.communicate(timeout=RUN_TIMEOUT_S if args[0] == "run" else REPORT_TIMEOUT_S)
    finally:
        watch.stop()
    return p.returncode, out, err, watch, time.monotonic() - t0


def strict_json(path: Path) -> dict:
    def refuse(name):
        raise ValueError(f"{name} in {path}")
    return json.loads(path.read_text(), parse_constant=refuse)


def check_documents(d: Path, stdout: str, stderr: str, secret: str, results: Path) -> dict:
    """What every output of run and report must keep, whatever the image wrote."""
    for name, text in (("stdout", stdout), ("stderr", stderr), ("report.md", (d / "r.md").read_text())):
        m = UNSAFE.search(text)
        assert m is None, f"{name} carries a raw {m.group(0)!r}"
    assert len(re.findall(r"(?m)^verdict: ", stdout)) == 1, "a forged verdict line reached the table"
    ET.parse(d / "r.xml")
    doc = strict_json(d / "r.json")
    for name in ("r.json", "r.md", "r.html", "r.xml"):
        assert secret not in (d / name).read_text(), name
    assert secret not in stdout and secret not in stderr
    # Attribution comes only from the host's launch record.
    assert doc["context"]["images"] == ["hostile.sif"] and doc["context"]["ranks"] == 1
    probes = {r["probe"] for r in doc["results"]}
    assert "victim.everything" not in probes and not any("victim" in (r.get("image") or "") for r in doc["results"])
    # Every planted input is a named problem; the image's own results are still reported.
    named = {p["path"] for p in doc["incomplete"]}
    for p in PLANTED:
        assert str(results / p) in named, (p, sorted(named))
    assert not any("hostetc" in p or "/etc/" in p for p in named)
    assert {"hostile.escapes", "binds.expected[/etc]", "env.ld_preload"} <= probes
    # Fixes always come from the catalog, never from the image.
    assert not any("evil.example" in (r.get("fix") or "") for r in doc["results"])
    # No invented ranks: a planted junit-r00003 is a problem, not a lost rank 3.
    assert all(x["rank"] == 0 for x in doc["lost"])
    return doc


def host_written_files(out: Path):
    """Files the host wrote in a results directory (ranks/ is the image's own and untrusted)."""
    for root, dirs, files in os.walk(out):
        dirs[:] = [x for x in dirs if x != "ranks"]
        for f in files:
            if f != "launch.log":     # the container's own output, kept raw for diagnosis
                yield Path(root, f)


@pytest.fixture(scope="module")
def hostile_run():
    img = image("hostile.sif")
    secret = "hf_" + secrets.token_hex(16)
    d = Path(user_dir("contprobe-hostile-"))
    out = d / "run"
    rc, so, se, watch, took = contprobe(
        ["run", str(img), "--expect-env", "HF_TOKEN", "-m", "env or binds", "--out", str(out),
         "--json", str(d / "r.json"), "--markdown", str(d / "r.md"), "--html", str(d / "r.html"),
         "--junit", str(d / "r.xml")], {"HF_TOKEN": secret}, cwd=str(d))
    yield dict(d=d, out=out, rc=rc, stdout=so, stderr=se, watch=watch, took=took, secret=secret)
    shutil.rmtree(d, ignore_errors=True)      # the image left a 200 MB file there


def test_run_stays_correct_and_leaks_nothing(hostile_run):
    h = hostile_run
    assert "Traceback" not in h["stderr"], h["stderr"][-3000:]
    assert h["rc"] == 3, (h["rc"], h["stderr"][-3000:])        # incomplete: planted inputs named
    # The image did get the secret (no --cleanenv) and wrote it into its own results...
    assert h["secret"] in (next((h["out"] / "ranks").glob("junit-r00000-*.xml"))).read_text()
    # ...but nothing the host wrote or showed carries it.
    doc = check_documents(h["d"], h["stdout"], h["stderr"], h["secret"], h["out"] / "ranks")
    for f in host_written_files(h["out"]):
        assert h["secret"] not in f.read_text(errors="replace"), f
    assert not any(h["secret"].encode() in a for a in h["watch"].argvs)
    # Re-runs come only from the operator's expectations, and never pass a secret-named variable:
    # the forged binds.expected[/etc] and the (real and forged) env.expected[HF_TOKEN] get none.
    assert doc["reruns"] == [], doc["reruns"]
    assert wait_until_gone(h["watch"]) == []
    row = [r for r in doc["results"] if r["probe"] == "hostile.secret"][0]
    assert "<redacted>" in row["message"] and len(row.get("evidence", "")) <= 4000


def test_report_on_the_hostile_results_is_bounded_and_the_same(hostile_run):
    h = hostile_run
    d = h["d"]
    rep = d / "rep"
    rep.mkdir()
    os.chown(rep, *[os.stat(d).st_uid, os.stat(d).st_gid])
    rc, so, se, watch, took = contprobe(
        ["report", str(h["out"]), "--json", str(rep / "r.json"), "--markdown", str(rep / "r.md"),
         "--html", str(rep / "r.html"), "--junit", str(rep / "r.xml")], {"HF_TOKEN": h["secret"]}, cwd=str(d),
        limit_memory=True)
    assert "Traceback" not in se and "MemoryError" not in se, se[-3000:]
    assert rc == 3, (rc, se[-3000:])
    doc = check_documents(rep, so, se, h["secret"], h["out"] / "ranks")
    run_doc = strict_json(d / "r.json")
    for key in ("verdict", "results", "lost", "incomplete"):
        assert doc[key] == run_doc[key], key


def test_cleanenv_reruns_never_carry_a_secret_on_argv():
    """--cleanenv: the real env.expected[HF_TOKEN] fails too; only the operator's non-secret variable
    is re-run, its value in the runtime's environment, never on a command line."""
    img = image("hostile.sif")
    secret = "hf_" + secrets.token_hex(16)
    plain = "plain-" + secrets.token_hex(8)
    d = Path(user_dir("contprobe-hostile-"))
    rc, so, se, watch, _ = contprobe(
        ["run", str(img), "--cleanenv", "--expect-env", "HF_TOKEN", "--expect-env", "FOO_SETTING",
         "-m", "env", "--out", str(d / "run"), "--json", str(d / "r.json")],
        {"HF_TOKEN": secret, "FOO_SETTING": plain}, cwd=str(d))
    assert "Traceback" not in se and rc == 3, (rc, se[-3000:])
    doc = strict_json(d / "r.json")
    assert [r["change"] for r in doc["reruns"]] == ["--env FOO_SETTING=<host value>"], doc["reruns"]
    hf = [r for r in doc["results"] if r["probe"] == "env.expected[HF_TOKEN]"][0]
    assert hf["outcome"] == "failed" and hf["gotcha"] == "env-not-passed"
    seen = b"\n".join(watch.argvs)
    assert b"apptainer" in seen and b"/inimage/bootstrap.py" in seen     # the watch saw the launches
    assert secret.encode() not in seen and plain.encode() not in seen
    launch = json.loads((d / "run" / "launch.json").read_text())
    assert not any(plain in a or secret in a for a in launch["argv"])      # the real argv
    # The reproducers show the environment a launch had: a plain value may appear, a secret never.
    for text in [launch["command"], *[r["command"] for r in launch["reruns"]]]:
        assert secret not in text
    assert f"APPTAINERENV_FOO_SETTING={plain}" in launch["reruns"][0]["command"]
    for f in host_written_files(d / "run"):
        assert secret not in f.read_text(errors="replace"), f
    assert wait_until_gone(watch) == []
    shutil.rmtree(d, ignore_errors=True)
