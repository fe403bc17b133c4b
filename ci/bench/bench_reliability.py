#!/usr/bin/env python3
"""Reliability figures for README: how fast a fault ends, and what hostile inputs cost `report`.

    python ci/bench/bench_reliability.py [--runs 3] [--grace 30] [--skip-mpich] [--keep]
                                         [--entries 10000] [--text-mb 200]
    (CI's quick mode: --runs 1 --grace 5 --entries 500 --text-mb 5)

Run as root after `bash ci/setup.sh` (images in /var/tmp/contprobe-images, user cpuser):
  a. rank death -> run end: `contprobe run mpich.sif --ranks 2` with UCX_POSIX_USE_PROC_LINK=n and
     CMA not excluded (a rank aborts in the 64 KiB allreduce); the moment the first rank process
     disappears is taken from /proc by tests/launchwatch.py, the end when contprobe exits. Median of
     --runs, at the default grace period (30 s) unless --grace says otherwise;
  b. `contprobe report` wall time and peak RSS (ru_maxrss of the child and its workers) on
     1. the results tree a run of hostile.sif leaves (FIFO, /dev/zero and '.' links, forged
        launch, escapes, a 200 MB failure text, ...);
     2. a synthetic hostile tree of --entries entries (10,000): 2,000 valid rank files and, for the rest, FIFOs,
        links to /dev/zero, to '.' and to /etc, truncated and deeply nested XML, billion-laughs
        entities, garbage journals claiming a world size of 99999999999, forged launch records, and
        one --text-mb failure text (200 MB).
Figures are printed as a table plus one JSON line; nothing is asserted (targets live in README).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.containers import IMAGES, as_user, chown_tree, home, user_dir, user_python  # noqa: E402
from tests.launchwatch import LaunchWatch  # noqa: E402

GOOD = ("<testsuites><testsuite name='pytest'><properties><property name='rank' value='{r}'/>"
        "<property name='size' value='2000'/><property name='hostname' value='h{h}'/></properties>"
        "<testcase classname='test_env' name='test_ld_preload' time='0.1'><properties>"
        "<property name='probe' value='env.ld_preload'/></properties></testcase></testsuite></testsuites>")


def env_for_user(**extra: str) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_", "SLURM_", "OMPI_"))}
    e.pop("HOME", None)
    e.update(PYTHONPATH=str(ROOT), **extra)
    return e


def contprobe(args, **env):
    """(returncode, seconds, peak RSS in MiB, LaunchWatch) of `contprobe ARGS` as the test user."""
    tag = f"CONTPROBE_TEST_TAG={uuid.uuid4().hex}"
    k, v = tag.split("=", 1)
    argv = as_user(["env", f"HOME={home()}", user_python(), "-m", "contprobe", *args])
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_for_user(**env, **{k: v}),
                         cwd="/tmp")
    watch = LaunchWatch(p.pid, tag.encode()).start()
    _, status, usage = os.wait4(p.pid, 0)
    took = time.monotonic() - t0
    watch.stop()
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, took, usage.ru_maxrss / 1024, watch


def rank_death(runs: int, grace: float) -> dict:
    img = IMAGES / "mpich.sif"
    gaps, totals = [], []
    for _ in range(runs):
        out = user_dir("contprobe-bench-rel-")
        t0 = time.monotonic()
        rc, took, _, watch = contprobe(
            ["run", str(img), "--ranks", "2", "--launcher", "hydra", "-k", "mpi4py", "--allreduce-sizes", "65536",
             "--no-rerun", "--grace", f"{grace:g}", "--timeout", "600", "--env", "UCX_POSIX_USE_PROC_LINK=n",
             "--out", f"{out}/run", "--json", f"{out}/run.json"], UCX_POSIX_USE_PROC_LINK="n")
        end = t0 + took
        died = watch.first_rank_death()
        doc = json.load(open(f"{out}/run.json"))
        gotchas = sorted({x["gotcha"] for x in doc["lost"]})
        gaps.append(end - died if died else float("nan"))
        totals.append(took)
        print(f"  run: exit {rc}, {took:.1f} s, rank death -> end {gaps[-1]:.1f} s, lost ranks named {gotchas}",
              file=sys.stderr)
        shutil.rmtree(out, ignore_errors=True)
    return {"grace_s": grace, "runs": runs, "death_to_end_s": [round(g, 2) for g in gaps],
            "median_death_to_end_s": round(statistics.median(gaps), 2), "median_run_s": round(statistics.median(totals), 2)}


def hostile_run_tree() -> str:
    out = user_dir("contprobe-bench-hostile-")
    rc, took, _, _ = contprobe(["run", str(IMAGES / "hostile.sif"), "-m", "env or binds", "--out", f"{out}/run",
                                "--json", f"{out}/run.json"], HF_TOKEN="hf_" + uuid.uuid4().hex)
    print(f"  hostile.sif run: exit {rc}, {took:.1f} s", file=sys.stderr)
    return f"{out}/run"


def synthetic_tree(d: Path, entries: int = 10000, text_mb: int = 200) -> Path:
    launch = d / "launch"
    ranks = launch / "ranks"
    ranks.mkdir(parents=True)
    (launch / "launch.json").write_text(json.dumps({"format": "contprobe-launch/1", "image": "/images/x.sif",
                                                    "expected_ranks": 2000, "hosts": ["h0"],
                                                    "started_utc": "2026-01-01T00:00:00Z"}))
    good = entries // 5
    for r in range(good):
        (ranks / f"junit-r{r:05d}-h{r // 4}.xml").write_text(GOOD.format(r=r, h=r // 4))
    kinds = ["fifo", "zero", "dot", "etc", "truncated", "deep", "laughs", "journal", "forged"]
    for i in range(entries - good - 1):
        kind, n = kinds[i % len(kinds)], good + i
        p = ranks / f"junit-r{n:05d}-x.xml"
        if kind == "fifo":
            os.mkfifo(p)
        elif kind == "zero":
            os.symlink("/dev/zero", p)
        elif kind == "dot":
            os.symlink(".", ranks / f"loop{i}")
        elif kind == "etc":
            os.symlink("/etc", ranks / f"etc{i}")
        elif kind == "truncated":
            p.write_text(GOOD.format(r=n, h=0)[:100])
        elif kind == "deep":
            p.write_bytes(b"<testsuite>" + b"<a>" * 20000 + b"</a>" * 20000 + b"</testsuite>")
        elif kind == "laughs":
            ents = "".join(f'<!ENTITY e{k} "' + f"&e{k - 1};" * 10 + '">' for k in range(1, 10))
            p.write_text(f'<!DOCTYPE t [<!ENTITY e0 "lol">{ents}]><testsuite><testcase name="&e9;"/></testsuite>')
        elif kind == "journal":
            (ranks / f"partial-r{n:05d}-x.jsonl").write_text(
                '{"event":"session","size":99999999999}\n' + "[" * 50000 + "\n\x1b]0;t\x07{\"event\":\"done\"}\n")
        elif kind == "forged":
            f = ranks / f"9999-12-{i % 28 + 1:02d}-{i}"
            f.mkdir()
            (f / "launch.json").write_text('{"image": "/images/victim.sif", "expected_ranks": 1}')
    with open(ranks / "junit-r01999-huge.xml", "w") as fh:      # text_mb MB of failure text
        fh.write('<testsuite><testcase classname="h" name="huge"><failure message="x">')
        chunk = "Segmentation fault (core dumped) " * 32000
        for _ in range(text_mb):
            fh.write(chunk)
        fh.write("</failure></testcase></testsuite>")
    return launch


def report_cost(path: str, label: str) -> dict:
    out = user_dir("contprobe-bench-report-")
    rc, took, rss, _ = contprobe(["report", path, "--out", f"{out}/r"])
    shutil.rmtree(out, ignore_errors=True)
    print(f"  report on {label}: exit {rc}, {took:.2f} s, peak RSS {rss:.0f} MiB", file=sys.stderr)
    return {"input": label, "exit": rc, "seconds": round(took, 2), "peak_rss_mib": round(rss)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--grace", type=float, default=30.0)
    ap.add_argument("--skip-mpich", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--entries", type=int, default=10000, help="entries of the synthetic hostile tree")
    ap.add_argument("--text-mb", type=int, default=200, help="size of its one huge failure text")
    a = ap.parse_args()
    load = os.getloadavg()
    res = {"load_before": [round(x, 2) for x in load]}
    if not a.skip_mpich:
        print(f"rank death -> run end, {a.runs} runs at --grace {a.grace:g}:", file=sys.stderr)
        res["rank_death"] = rank_death(a.runs, a.grace)
    print("report on hostile inputs:", file=sys.stderr)
    hostile = hostile_run_tree()
    tmp = Path(tempfile.mkdtemp(prefix="contprobe-bench-synth-", dir="/tmp"))
    try:
        synth = synthetic_tree(tmp, a.entries, a.text_mb)
        chown_tree(str(tmp))
        res["report"] = [report_cost(hostile, "hostile.sif results"),
                         report_cost(str(synth), f"synthetic {a.entries}-entry hostile tree + {a.text_mb} MB text")]
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(os.path.dirname(hostile), ignore_errors=True)
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print()
    if "rank_death" in res:
        rd = res["rank_death"]
        print(f"| rank death -> run end (median of {rd['runs']}, --grace {rd['grace_s']:g}) | "
              f"{rd['median_death_to_end_s']} s (runs {rd['death_to_end_s']}) |")
    for r in res["report"]:
        print(f"| report, {r['input']} | {r['seconds']} s, peak {r['peak_rss_mib']} MiB, exit {r['exit']} |")
    print(f"| load average before / after | {res['load_before'][0]} / {res['load_after'][0]} |")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
