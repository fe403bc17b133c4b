"""`contprobe nightly IMAGE_DIR`: validate every image of a directory over the allocation's nodes,
several at once, then write one dated report compared with earlier nights.

Replaces ci/nightly.sh: the site profile says the scheduler (hosts), the ranks per node and the
GPU binding; images run concurrently, each on its own slice of the hosts, with a progress line.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional

from contprobe import harness, schedulers
from contprobe.commands import args as cargs
from contprobe.reports import pipeline
from contprobe.site import Site, load_or_detect
from contprobe.suite import UsageError

NAME, HELP = "nightly", "validate every image of a directory over the allocation, then one dated report"
IMAGE_SUFFIXES = (".sif", ".simg", ".sqfs", ".squashfs")


@dataclass
class NightlyRequest:
    image_dir: str
    site: Site
    out_root: str
    jobs: int = 1
    nodes_per_image: Optional[int] = None
    command: str = "validate"
    timeout: float = 1800.0
    run_args: List[str] = field(default_factory=list)
    night: str = ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image_dir", help="directory of images (*.sif) to validate")
    p.add_argument("--site", default=None, help="site profile (`contprobe sites`); default: detect")
    p.add_argument("--out-root", default="contprobe-nightly", metavar="DIR", help="where dated directories go")
    p.add_argument("--jobs", type=cargs.positive_int, default=None, metavar="N",
                   help="images validated at once (default: hosts / nodes-per-image, else 1)")
    p.add_argument("--nodes-per-image", type=cargs.positive_int, default=None, metavar="N")
    p.add_argument("--command", choices=["validate", "run"], default="validate")
    p.add_argument("--timeout", type=cargs.seconds, default=1800.0, metavar="S", help="per image")
    p.add_argument("--night", default="", help="the night's name (default: today's UTC date)")
    p.add_argument("--run-args", default="", metavar="'ARGS'",
                   help="arguments for every image's run, as one shell-quoted string (--run-args='--no-rerun')")


def images_in(d: str) -> List[str]:
    if not os.path.isdir(d):
        raise UsageError(f"{d}: not a directory")
    found = sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(IMAGE_SUFFIXES)
                   and os.path.isfile(os.path.join(d, n)))
    if not found:
        raise UsageError(f"{d}: no images (*.sif) to validate")
    return found


def main(ns: argparse.Namespace) -> int:
    site = load_or_detect(ns.site)
    try:
        extra = shlex.split(ns.run_args)
    except ValueError as exc:
        raise UsageError(f"--run-args: {exc}") from None
    return run(NightlyRequest(ns.image_dir, site, os.path.abspath(ns.out_root), ns.jobs or 0, ns.nodes_per_image,
                              ns.command, ns.timeout, extra, ns.night))


def night_dir(root: str, night: str) -> str:
    """OUT_ROOT/<night>, or <night>.N when tonight already ran (a rerun keeps the first)."""
    base = os.path.join(root, night)
    path, n = base, 2
    while os.path.exists(path):
        path = f"{base}.{n}"
        n += 1
    os.makedirs(path, mode=0o755)
    latest = os.path.join(root, "latest")
    if os.path.islink(latest):
        os.unlink(latest)
    if not os.path.exists(latest):
        os.symlink(os.path.basename(path), latest)
    return path


def run(req: NightlyRequest) -> int:
    imgs = images_in(req.image_dir)
    night = req.night or time.strftime("%Y-%m-%d", time.gmtime())
    try:
        os.makedirs(req.out_root, exist_ok=True)
        root = night_dir(req.out_root, night)
    except OSError as exc:   # under a file, unwritable: one line before anything runs
        raise UsageError(f"--out-root {req.out_root}: {exc.strerror or exc}") from None
    os.makedirs(os.path.join(root, "results"))
    # one read-only harness for every image of the night (their runs find it through the variable
    # and copy nothing); ranks and re-runs of each image bind it as they would their own
    shared = harness.stage(os.path.join(root, ".harness"))
    alloc = schedulers.current(preferred=req.site.scheduler)
    hosts = alloc.hosts if alloc else []
    per = req.nodes_per_image or max(1, len(hosts)) if hosts else 1
    jobs = req.jobs or max(1, len(hosts) // per if hosts else 1)
    slices = [hosts[i * per:(i + 1) * per] for i in range(jobs)]
    state = {"done": 0, "failed": 0, "running": 0}
    counting = threading.Lock()     # the pool's threads update one progress line
    t0 = time.monotonic()
    sys.stderr.write(f"[nightly] {len(imgs)} image(s), {jobs} at a time, {len(hosts) or 1} host(s); results in {root}\n")

    def one(i_img):
        i, img = i_img
        name = os.path.basename(img).rsplit(".", 1)[0]
        out = os.path.join(root, "results", name)
        hs = slices[i % jobs]
        argv = [sys.executable, "-m", "contprobe", req.command, img, "--out", out, "--site", req.site.name,
                "--timeout", f"{req.timeout:g}", *req.run_args]
        env = dict(os.environ, **{harness.SHARED_VAR: shared})
        if hs and alloc is not None:
            if alloc.scheduler == "pbs":
                fd, hostfile = tempfile.mkstemp(prefix=f"hosts-{name}-", dir=root)
                with os.fdopen(fd, "w") as fh:
                    fh.write("".join(f"{h}\n" for h in hs))
                env["PBS_NODEFILE"] = hostfile
            elif alloc.scheduler == "slurm":
                env["SLURM_JOB_NODELIST"] = ",".join(hs)
        with counting:
            state["running"] += 1
        with open(os.path.join(root, f"{name}.log"), "w") as log:
            try:
                rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, timeout=req.timeout + 120).returncode
            except subprocess.TimeoutExpired:
                rc = 124
        with counting:
            state["running"] -= 1
            state["done"] += 1
            state["failed"] += rc != 0
            elapsed = time.monotonic() - t0
            left = elapsed / state["done"] * (len(imgs) - state["done"])
            sys.stderr.write(f"[nightly] progress: {state['done']}/{len(imgs)} done, {state['running']} running, "
                             f"{state['failed']} failed, {elapsed:.0f} s elapsed, ~{left:.0f} s left\n")
            sys.stderr.flush()
        return rc

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, enumerate(imgs)))
    return pipeline.report(pipeline.ReportRequest(
        paths=[os.path.join(root, "results")], site=req.site,
        outputs=pipeline.Outputs(out_dir=os.path.join(root, "report")), baseline=_previous_report(req.out_root, root),
        history=req.out_root, title=f"contprobe nightly {night}"))


def _previous_report(out_root: str, current: str) -> Optional[str]:
    nights = sorted(d for d in os.listdir(out_root) if os.path.join(out_root, d) != current and d != "latest"
                    and os.path.isfile(os.path.join(out_root, d, "report", "report.json")))
    return os.path.join(out_root, nights[-1], "report", "report.json") if nights else None
