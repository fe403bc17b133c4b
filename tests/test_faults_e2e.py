"""Faults end quickly and clean up, on real MPICH (Hydra) launching real Apptainer containers.

- A dead rank: UCX's CMA transport refused between containers (UCX_POSIX_USE_PROC_LINK=n without
  UCX_TLS=^cma) aborts a rank in the 64 KiB allreduce; the launch must end within the grace period
  plus 15 s of that death (issue 9's bound), name `ucx-cma-eperm`, and leave no process behind.
- contprobe itself stopped by SIGTERM (a walltime, an outer `timeout`), SIGINT (Ctrl-C) or SIGHUP in the
  middle of a launch: it writes the partial report, exits 128+signal, and no process survives.
Processes are watched from outside (tests/launchwatch.py), not through contprobe's own tracking.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, clean_env
from tests.containers import as_user, home, image, run_as_user, user_dir, user_python
from tests.launchwatch import LaunchWatch, wait_until_gone

pytestmark = pytest.mark.slow

GRACE_S = 5
BOUND_S = GRACE_S + 15          # the bound: the grace period plus 15 s
UCX_OK = ["--env", "UCX_POSIX_USE_PROC_LINK=n", "--env", "UCX_TLS=^cma"]


@pytest.fixture(autouse=True)
def need_mpiexec():
    if not shutil.which("mpiexec.mpich"):
        pytest.skip("mpiexec.mpich not installed (apt-get install mpich)")


def start_run(args, **env):
    """`contprobe run ARGS` as the unprivileged user, watched; returns (Popen, watch, out dir)."""
    tag = f"CONTPROBE_TEST_TAG={uuid.uuid4().hex}"
    e = clean_env(PYTHONPATH=str(ROOT), **env)
    e.pop("HOME", None)
    name, value = tag.split("=", 1)
    e[name] = value
    out = user_dir("contprobe-faults-")
    argv = as_user(["env", f"HOME={home()}", user_python(), "-m", "contprobe", "run", *args,
                    "--out", f"{out}/run", "--json", f"{out}/run.json"])
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e, cwd=out)
    return p, LaunchWatch(p.pid, tag.encode()).start(), Path(out)


def contprobe_pid(root: int, timeout: float = 30) -> int:
    """The `python -m contprobe` process under runuser (signals go to it, as a batch system's would)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                stat = open(f"/proc/{name}/stat", "rb").read()
                cmd = open(f"/proc/{name}/cmdline", "rb").read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            if ppid == root and b"\0contprobe\0" in cmd:
                return int(name)
        time.sleep(0.05)
    raise AssertionError("contprobe did not start")


def test_dead_rank_ends_the_launch_within_grace_and_leaves_nothing():
    img = image("mpich.sif")
    p, watch, out = start_run([str(img), "--ranks", "2", "--launcher", "hydra", "-k", "mpi4py",
                               "--allreduce-sizes", "65536", "--no-rerun", "--grace", str(GRACE_S),
                               "--timeout", "120", "--env", "UCX_POSIX_USE_PROC_LINK=n"],
                              UCX_POSIX_USE_PROC_LINK="n")
    started = time.monotonic()
    try:
        stdout, stderr = p.communicate(timeout=300)
        ended = time.monotonic()
    finally:
        watch.stop()
    assert p.returncode == 1, (stdout[-2000:], stderr[-3000:])
    # When Hydra ends quickly by itself the ranks may come and go between two looks: then the bound
    # is checked from the start of the run, which is stricter.
    died = watch.first_rank_death() or started
    print(f"rank died {died - started:.1f} s into the run; the run ended {ended - died:.1f} s later")
    assert ended - died <= BOUND_S, f"the run ended {ended - died:.1f} s after a rank died (bound {BOUND_S} s)"
    doc = json.load(open(out / "run.json"))
    assert doc["lost"] and {x["gotcha"] for x in doc["lost"]} == {"ucx-cma-eperm"}, doc["lost"]
    died_in = [r for r in doc["results"] if r["probe"] == "allreduce.mpi4py[65536]"]
    assert died_in and died_in[0]["gotcha"] == "ucx-cma-eperm"
    assert {"mpiexec.hydra", "hydra_pmi_proxy"} & watch.names(), watch.names()   # the watch saw the launch
    assert wait_until_gone(watch) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_mid_launch_writes_the_partial_report_and_leaves_nothing(sig):
    img = image("mpich.sif")
    # Long enough to be stopped in the middle: torch, horovod and five message sizes on 2 ranks.
    p, watch, out = start_run([str(img), "--ranks", "2", "--launcher", "hydra", *UCX_OK, "--no-rerun",
                               "-m", "allreduce or horovod", "--timeout", "300"])
    try:
        target = contprobe_pid(p.pid)
        ranks = out / "run" / "ranks"
        deadline = time.monotonic() + 120
        # Stop it once both ranks have started probes (their journals have lines) and before any ends.
        while time.monotonic() < deadline:
            journals = list(ranks.glob("partial-r*.jsonl")) if ranks.exists() else []
            if len(journals) == 2 and all(b'"start"' in j.read_bytes() for j in journals):
                break
            assert p.poll() is None, p.communicate()
            time.sleep(0.1)
        else:
            raise AssertionError("the ranks never started a probe")
        assert not list(ranks.glob("junit-r*.xml")), "the launch ended before it could be stopped"
        os.kill(target, sig)
        stopped = time.monotonic()
        stdout, stderr = p.communicate(timeout=120)
        took = time.monotonic() - stopped
    finally:
        watch.stop()
    assert p.returncode == 128 + sig, (p.returncode, stderr[-3000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    assert took < 60, f"{took:.1f} s from {sig.name} to exit: a hang"
    assert wait_until_gone(watch) == []
    # The partial report was written, and `contprobe report` reads the directory afterwards.
    doc = json.load(open(out / "run.json"))
    assert {x["rank"] for x in doc["lost"]} == {0, 1}
    assert all(f"contprobe was stopped ({sig.name})" in x["reason"] for x in doc["lost"]), doc["lost"]
    rep = run_as_user(["report", str(out / "run"), "--json", "-"], timeout=120)
    assert rep.rc == 1, rep
    assert {x["rank"] for x in rep.json()["lost"]} == {0, 1}
    # The probe the ranks were in when stopped is named from their journals, not silently dropped.
    assert any(r["outcome"] == "error" and "no JUnit written" in r["message"] for r in rep.json()["results"]), \
        rep.json()["results"]
