#!/usr/bin/env python3
"""What the harness brings into each container, what staging it costs, and what the bytecode cache saves.

    python ci/bench/bench_staging.py [--before REV] [--after DIR] [--image base.sif] [-n 5] [--images 8]

Measures, for this tree (or the tree in DIR) and for the tree at REV (default: the commit before
harness sharing):
  1. the staged harness: bytes and files (the in-image package, the unpacked pytest wheels);
  2. `harness.stage()` into a fresh directory (what every `contprobe run` paid per results directory)
     and into a directory already staged with the same contents (what a nightly's second image pays);
  3. a nightly of --images images: staging per run before, one staging for the night after;
  4. `contprobe run IMAGE -m "env or binds"` wall time as the unprivileged user, N runs each: before
     (no bytecode cache: every start compiles pytest and the probes) and after (the first run fills
     the per-image cache, the others read it).
Prints one line per figure, the machine load, and a JSON summary. Figures only: no target, no exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = os.environ.get("CONTPROBE_IMAGES", "/var/tmp/contprobe-images")
USER = os.environ.get("CONTPROBE_USER", "cpuser")
PY = "/opt/contprobe/venv/bin/python" if os.path.exists("/opt/contprobe/venv/bin/python") else sys.executable
BEFORE = "099ca7f"   # the last commit that staged a fresh harness for every results directory

STAGE_SNIPPET = r"""
import json, os, sys, tempfile, time
from contprobe import harness
n = int(sys.argv[1]); root = tempfile.mkdtemp(prefix="bench-stage-")
cold, warm = [], []
for i in range(n):
    d = os.path.join(root, f"h{i}")
    t = time.perf_counter(); harness.stage(d); cold.append(time.perf_counter() - t)
    t = time.perf_counter(); harness.stage(d); warm.append(time.perf_counter() - t)
d = os.path.join(root, "h0")
files = sum(len(f) for _, _, f in os.walk(d)); size = sum(os.path.getsize(os.path.join(r, x)) for r, _, f in os.walk(d) for x in f)
print(json.dumps({"cold": cold, "warm": warm, "files": files, "bytes": size, "root": root}))
"""


def tree_at(rev: str) -> str:
    """The repository at REV, unpacked into a temp dir readable by the unprivileged user."""
    dest = tempfile.mkdtemp(prefix=f"contprobe-{rev}-", dir="/tmp")
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev], check=True, stdout=subprocess.PIPE).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    subprocess.run(["chmod", "-R", "a+rX", dest], check=True)
    os.chmod(dest, 0o755)
    return dest


def stage_figures(src: str, n: int) -> dict:
    out = subprocess.run([PY, "-c", STAGE_SNIPPET, str(n)], env=dict(os.environ, PYTHONPATH=src), check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    doc = json.loads(out)
    subprocess.run(["chmod", "-R", "u+w", doc["root"]], check=False)
    shutil.rmtree(doc.pop("root"), ignore_errors=True)
    return doc


def as_user(argv: list) -> list:
    return ["runuser", "-u", USER, "--", *argv] if os.geteuid() == 0 else argv


def run_times(src: str, image: str, n: int) -> list:
    """Wall seconds of `contprobe run` as the user, each into a new results dir, one fresh cache home."""
    home = tempfile.mkdtemp(prefix="bench-run-", dir="/tmp")
    if os.geteuid() == 0:
        shutil.chown(home, USER, USER)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": src,
           "XDG_CACHE_HOME": os.path.join(home, "cache"), "APPTAINER_CACHEDIR": os.path.join(home, "apptainer"),
           "HOME": home}
    times = []
    for i in range(n):
        argv = as_user(["env", *[f"{k}={v}" for k, v in env.items()], PY, "-m", "contprobe", "run", image,
                        "-m", "env or binds", "--no-rerun", "--out", os.path.join(home, f"out{i}"),
                        "--json", os.path.join(home, f"r{i}.json")])
        t = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=home)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"contprobe run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    subprocess.run(["chmod", "-R", "u+w", home], check=False)
    shutil.rmtree(home, ignore_errors=True)
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default=BEFORE, help="git revision to compare with")
    ap.add_argument("--after", default=ROOT, help="source tree measured as 'after' (default: this one)")
    ap.add_argument("--image", default=os.path.join(IMAGES, "base.sif"))
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--images", type=int, default=8, help="images in the modelled nightly")
    a = ap.parse_args()
    old = tree_at(a.before)
    summary = {"load_start": os.getloadavg()[0]}
    try:
        for label, src in (("before", old), ("after", os.path.abspath(a.after))):
            st = stage_figures(src, a.n)
            cold, warm = statistics.median(st["cold"]), statistics.median(st["warm"])
            # before: every run stages its own; after: the night stages once, each run checks the key
            night = a.images * cold if label == "before" else cold + a.images * warm
            print(f"{label}: harness {st['bytes'] / 1e6:.2f} MB in {st['files']} files; stage fresh "
                  f"{cold * 1000:.0f} ms, again into the same dir {warm * 1000:.0f} ms (median of {a.n}); "
                  f"staging for a nightly of {a.images} images {night * 1000:.0f} ms")
            runs = run_times(src, a.image, a.n)
            print(f"{label}: contprobe run {os.path.basename(a.image)} -m 'env or binds' --no-rerun: first "
                  f"{runs[0]:.2f} s, median of the next {len(runs) - 1}: {statistics.median(runs[1:]):.2f} s "
                  f"(all: {', '.join(f'{x:.2f}' for x in runs)})")
            summary[label] = {"harness_bytes": st["bytes"], "harness_files": st["files"], "stage_fresh_s": cold,
                              "stage_again_s": warm, "nightly_staging_s": night, "run_s": runs}
    finally:
        shutil.rmtree(old, ignore_errors=True)
    summary["load_end"] = os.getloadavg()[0]
    print(f"load average: {summary['load_start']:.1f} at start, {summary['load_end']:.1f} at end")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
