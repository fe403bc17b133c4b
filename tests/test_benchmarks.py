"""Every benchmark script still runs, in its quick mode (the figures are never asserted here).

Benchmarks that nothing runs rot: two of them imported modules the redesign removed and failed for
weeks, and bench_allreduce.sh stopped at a GPU probe its -k selected. Every script in ci/bench/ runs
here once with the smallest size and must print its table.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.containers import user_dir

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "ci" / "bench"

# script, environment of its quick mode, a line its report must contain
CASES = [
    ("bench_reframe.sh", {"QUICK": "1"}, "ratio contprobe / ReFrame"),
    ("bench_doctor.sh", {"N": "1"}, "verdict: PASSED"),
    ("bench_corpus.py", {}, "TOTAL"),
    ("bench_explain.sh", {"SIZE": "10000000", "N": "1"}, "explain / grep:"),
    ("bench_report.py", {"QUICK_ARGS": "--ranks 1000"}, "ms/file"),
    ("bench_allreduce.sh", {"SIZES": "1048576", "REPEAT": "1", "LOOP": "0"}, "| probe / IMB |"),
    ("bench_allreduce_imb.sh", {"MSGLOG": "20:20"}, "t_avg[usec]"),
    ("bench_run.sh", {"N": "1", "MARK": "env or binds"}, "ratio run / (floor + probe work)"),
    # one rank: a bare multi-rank launch can wait on a lingering FUSE driver (fuse-driver-lingers)
    ("bench_run_ranks.sh", {"RANKS_LIST": "1", "N": "1", "PROFILE_K": "1"}, "[ranks 1] ratio"),
    ("bench_staging.py", {"QUICK_ARGS": "-n 2 --images 2"}, "load average:"),
    ("bench_reliability.py", {"QUICK_ARGS": "--runs 1 --grace 5 --entries 500 --text-mb 5"},
     "| load average before / after |"),
    ("loc.py", {}, "revision"),
]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the benchmarks run containers as the test user through runuser")
@pytest.mark.parametrize("script, env, expect", CASES, ids=[c[0] for c in CASES])
def test_benchmark_runs_in_quick_mode(script, env, expect):
    work = user_dir("contprobe-bench-")        # the unprivileged user runs the containers in it
    runner = ["bash"] if script.endswith(".sh") else [sys.executable]
    env = dict(env)
    extra = env.pop("QUICK_ARGS", "").split()
    proc = subprocess.run([*runner, str(BENCH / script), *extra], cwd=work, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900,
                          env={**os.environ, "WORK": os.path.join(work, "work"), "PYTHONPATH": str(ROOT), **env})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert expect in proc.stdout, proc.stdout[-3000:]


def test_every_benchmark_script_is_run_here():
    scripts = {p.name for p in BENCH.iterdir() if p.suffix in (".sh", ".py") and p.name.startswith(("bench_", "loc"))}
    assert scripts == {c[0] for c in CASES}
