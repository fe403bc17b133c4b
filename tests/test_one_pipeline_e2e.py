"""One pipeline: for any results directory, `run --json` and `report DIR --json` give the same verdict,
rows, gotchas, lost ranks and exit code. Real launches: passing, failing, lost ranks, re-runs."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.conftest import clean_env
from tests.containers import image, run_as_user, user_dir

pytestmark = pytest.mark.slow


def same_answer(run_args, env=None):
    out = user_dir()
    res = run_as_user(["run", *run_args, "--out", os.path.join(out, "run"), "--json", os.path.join(out, "run.json")],
                      env=env)
    rep = run_as_user(["report", os.path.join(out, "run"), "--json", os.path.join(out, "report.json")], env=env)
    a = json.load(open(os.path.join(out, "run.json")))
    b = json.load(open(os.path.join(out, "report.json")))
    assert res.rc == rep.rc, (res, rep)
    for key in ("verdict", "results", "gotchas", "lost", "reruns", "placement"):
        assert a[key] == b[key], key
    assert a["context"]["command"] == b["context"]["command"] and a["context"]["mode"] == "run"
    return res.rc, a


def test_passing_and_failing_with_a_rerun():
    host = Path("/srv") / f"contprobe-{uuid.uuid4().hex[:8]}"
    host.mkdir(parents=True)
    os.chmod(host, 0o777)
    try:
        rc, doc = same_answer([str(image("base.sif")), "-m", "binds or env"])
        assert rc == 0 and doc["verdict"] == "passed"
        rc, doc = same_answer([str(image("base.sif")), "-m", "binds", "--expect-bind", str(host)])
        assert rc == 1 and [r["change"] for r in doc["reruns"]] == [f"-B {host}"]
        assert "bind-missing" in {g["id"] for g in doc["gotchas"]}
    finally:
        shutil.rmtree(host, ignore_errors=True)


def test_lost_ranks_keep_their_cause(mpiexec):
    """UCX's CMA refused between containers kills the ranks in the 64 KiB allreduce: both commands say
    ucx-cma-eperm (the report used to say rank-lost and advise a longer timeout)."""
    env = clean_env(UCX_POSIX_USE_PROC_LINK="n")
    rc, doc = same_answer([str(image("mpich.sif")), "--ranks", "2", "--launcher", "hydra", "-k", "mpi4py",
                           "--allreduce-sizes", "65536", "--no-rerun", "--grace", "10", "--timeout", "300",
                           "--env", "UCX_POSIX_USE_PROC_LINK=n"], env=env)
    assert rc == 1 and doc["lost"], doc["lost"]
    assert {x["gotcha"] for x in doc["lost"]} == {"ucx-cma-eperm"}
