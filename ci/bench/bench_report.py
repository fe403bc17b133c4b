#!/usr/bin/env python3
"""Benchmark `contprobe report` on 10,000 rank files against a plain junitparser loop.

    python ci/bench/bench_report.py [--ranks 10000] [--cases 30] [--dir DIR] [--keep]

Generates rank files shaped like the probe suite's (suite properties, per-case probe properties,
metrics, some failures with tracebacks, some skips, a few corrupt files), then times:
  1. `contprobe report DIR --out OUT` (all outputs: table, JSON, Markdown, HTML, merged JUnit) in a
     child process, with its peak memory (ru_maxrss of the child);
  2. a plain loop: junitparser reads each file and adds its suites to one JUnitXml, then writes it.
Targets (2-core CI machine): report <= 5 s, >= 5x faster than the loop, <= 500 MB peak.
Prints one line per figure and a JSON summary; exit 1 if a target is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from xml.sax.saxutils import escape, quoteattr

TRACEBACK = "".join(f"  File \"/opt/app/x{i}.py\", line {i * 7}, in step{i}\n    do_step({i})\n" for i in range(12))


def generate(d: str, ranks: int, cases: int, seed: int = 5) -> dict:
    rnd = random.Random(seed)
    os.makedirs(d, exist_ok=True)
    corrupt = set(rnd.sample(range(ranks), max(1, ranks // 2000)))       # ~5 killed while writing
    stats = {"files": ranks, "corrupt": len(corrupt), "failures": 0, "skips": 0}
    for r in range(ranks):
        host = f"x3{r // 4 // 16:03d}c0s{(r // 4) % 16}b0n0"
        parts = ['<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
                 f'<testsuite name="contprobe" errors="0" failures="0" skipped="0" tests="{cases}" time="9.1" '
                 f'timestamp="2025-01-02T03:04:05" hostname="{host}"><properties>']
        props = {"hostname": host, "image": "/soft/containers/pytorch-24.05.sif", "runtime": "apptainer",
                 "rank": r, "size": ranks, "local_rank": r % 4, "launcher": "pals", "python": "3.10.12",
                 "pytest": "8.1.1", "driver": "535.154.05", "cuda": "12.2", "mpi_library": "MPICH 4.1.2",
                 "started_utc": "2025-01-02T03:04:05Z", "contprobe": "0.1.0",
                 "command": "python -m pytest /opt/contprobe/inimage/probes --results-dir /eagle/p/out/ranks"}
        parts += [f'<property name="{k}" value={quoteattr(str(v))} />' for k, v in props.items()]
        parts.append("</properties>")
        for c in range(cases):
            probe = f"group{c % 6}.probe{c}"
            parts.append(f'<testcase classname="test_group{c % 6}" name="test_probe{c}" file="test_group{c % 6}.py" '
                         f'line="{c * 10}" time="0.{rnd.randint(1, 999):03d}"><properties>'
                         f'<property name="probe" value="{probe}" />')
            if c == 3:
                parts.append(f'<property name="metric.busbw_gbps" value="{rnd.uniform(4.2, 6.0):.4f}" />')
            if c == 7 and r % 97 == 0 or c == 12 and host.endswith("s5b0n0") and r < 400:
                stats["failures"] += 1
                msg = "mpi4py is not installed in this Python (launched as rank %d of %d by pals)" % (r, ranks)
                parts.append('<property name="gotcha" value="mpi4py-missing" />'
                             f'<property name="message" value={quoteattr(msg)} />'
                             '<property name="fix" value="Install mpi4py where the container sees it" />'
                             f'</properties><failure message={quoteattr(msg)}>{escape(TRACEBACK)}</failure></testcase>')
                continue
            if c in (10, 11, 20):
                stats["skips"] += 1
                parts.append('<property name="message" value="no --expect-gpus given" /></properties>'
                             '<skipped type="pytest.skip" message="no --expect-gpus given">skip</skipped></testcase>')
                continue
            parts.append("</properties></testcase>")
        parts.append("</testsuite></testsuites>")
        text = "".join(parts)
        if r in corrupt:
            text = text[: len(text) // 3]
        with open(os.path.join(d, f"junit-r{r:05d}-{host}.xml"), "w") as fh:
            fh.write(text)
    return stats


LOOP = r"""
import os, sys, time, resource
import junitparser
d, out = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
merged = junitparser.JUnitXml("loop")
bad = 0
for name in sorted(os.listdir(d)):
    try:
        xml = junitparser.JUnitXml.fromfile(os.path.join(d, name))
    except Exception:
        bad += 1
        continue
    for suite in xml:
        for case in suite:           # read what a report needs from every case
            case.result, case.name, case.time
        merged.add_testsuite(suite)
merged.write(out)
print(time.perf_counter() - t0, bad, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def timed(argv, env=None) -> tuple:
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024, p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=10000)
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--dir", help="where to generate (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--skip-loop", action="store_true", help="do not run the (slow) junitparser loop")
    ns = ap.parse_args()
    root = ns.dir or tempfile.mkdtemp(prefix="contprobe-bench-")
    data = os.path.join(root, "ranks")
    if not os.path.isdir(data) or len(os.listdir(data)) != ns.ranks:
        shutil.rmtree(data, ignore_errors=True)
        t = time.perf_counter()
        stats = generate(data, ns.ranks, ns.cases)
        print(f"generated {ns.ranks} files x {ns.cases} cases in {time.perf_counter() - t:.1f} s: {stats}")
    size = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data))
    print(f"input: {size / 1e6:.0f} MB; cpus: {os.cpu_count()}; load: {os.getloadavg()[0]:.1f}")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    out = os.path.join(root, "out")
    # A warm page cache for both contenders: the first read of 10,000 files is the disk's benchmark.
    subprocess.run(["cat"] + [os.path.join(data, f) for f in sorted(os.listdir(data))[:1]], stdout=subprocess.DEVNULL)
    for f in os.listdir(data):
        with open(os.path.join(data, f), "rb") as fh:
            fh.read()
    # Peak memory is measured in a fresh interpreter per contender: RUSAGE_CHILDREN is a maximum.
    rep_wall, _, p = timed([sys.executable, "-m", "contprobe", "report", data, "--site", "polaris", "--out", out], env)
    if p.returncode != 3:
        print(p.stdout[-3000:], p.stderr[-3000:])
        print(f"unexpected exit {p.returncode} (corrupt files must make it 3)")
        return 1
    peak = subprocess.run([sys.executable, "-c",
                           "import resource,subprocess,sys;subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,"
                           "stderr=subprocess.DEVNULL);print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
                           sys.executable, "-m", "contprobe", "report", data, "--site", "polaris", "--out", out],
                          stdout=subprocess.PIPE, text=True, env=env).stdout.strip()
    rep_peak = int(peak) / 1024
    print(f"contprobe report (all five outputs): {rep_wall:.2f} s, peak {rep_peak:.0f} MB")
    result = {"ranks": ns.ranks, "cases": ns.cases, "input_mb": round(size / 1e6), "report_s": round(rep_wall, 2),
              "report_peak_mb": round(rep_peak), "cpus": os.cpu_count()}
    ok = rep_wall <= 5 and rep_peak <= 500
    if not ns.skip_loop:
        loop_wall, _, lp = timed([sys.executable, "-c", LOOP, data, os.path.join(root, "loop.xml")], env)
        loop_s, bad, loop_rss = lp.stdout.split()
        print(f"junitparser loop: {loop_wall:.2f} s ({bad} unreadable), peak {int(loop_rss) / 1024:.0f} MB")
        print(f"speed-up: {loop_wall / rep_wall:.1f}x")
        result.update(loop_s=round(loop_wall, 2), loop_peak_mb=round(int(loop_rss) / 1024),
                      speedup=round(loop_wall / rep_wall, 1))
        ok = ok and loop_wall / rep_wall >= 5
    print(json.dumps(result))
    if not ns.keep and not ns.dir:
        shutil.rmtree(root, ignore_errors=True)
    print("targets met" if ok else "TARGETS MISSED (<= 5 s, >= 5x, <= 500 MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
