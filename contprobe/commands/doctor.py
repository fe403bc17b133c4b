"""`contprobe doctor`: the probe suite and the host checks on this machine, as the user's job sees it."""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

from contprobe.checks import HostOptions, run_all
from contprobe.commands import args as cargs
from contprobe.commands.run import prepare_out, write_record
from contprobe.launch import execute
from contprobe.model import LaunchRecord
from contprobe.reports import pipeline
from contprobe.site import Site, load_or_detect
from contprobe.suite import PROBES_DIR, Expectations, UsageError, run_argv_quoted

NAME, HELP = "doctor", "run the probe suite on this machine and explain every failure"


@dataclass
class DoctorRequest:
    exp: Expectations
    site: Site
    outputs: pipeline.Outputs
    timeout: float = 1800.0
    out: Optional[str] = None
    force: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    cargs.add_expectations(p)
    cargs.add_outputs(p)
    p.add_argument("--timeout", type=cargs.seconds, default=1800.0, metavar="S", help="whole-suite timeout")
    p.add_argument("--site", default=None, help="site profile (`contprobe sites`); default: detect")
    p.add_argument("--out", default=None, metavar="DIR", help="keep the results directory here (new or empty)")
    p.add_argument("--force", action="store_true", help="replace what a non-empty --out holds")


def main(ns: argparse.Namespace) -> int:
    return run(DoctorRequest(Expectations.from_namespace(ns), load_or_detect(ns.site), cargs.outputs(ns), ns.timeout,
                             ns.out, ns.force))


def run(req: DoctorRequest) -> int:
    t0 = time.monotonic()
    keep = req.out is not None
    out = prepare_out(req.out, req.force) if keep else tempfile.mkdtemp(prefix="contprobe-doctor-")
    try:
        ranks = os.path.join(out, "ranks")
        os.makedirs(ranks, mode=0o700)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(PROBES_DIR), "-q", "-rN", "--color=no",
                "--results-dir", ranks, *req.exp.pytest_args()]
        # The user's environment as it is: the leak probes must see what their jobs see.
        res = execute(argv, os.path.join(out, "pytest.log"), req.timeout, env=req.exp.env_values(), cwd=out)
        if res.returncode == 5:
            raise UsageError("no probe matches the -k/-m selection")
        if res.returncode in (3, 4) or not os.listdir(ranks):
            # pytest itself broke (internal error, bad option): show what it said, never nothing.
            sys.stderr.write(res.log[-4000:])
            sys.stderr.write(f"contprobe: the probe suite did not run (pytest exit {res.returncode})\n")
            return 1
        host = [] if (req.exp.keyword or req.exp.markexpr) else \
            run_all(HostOptions(module_hint=req.site.runtime_module, site_proxy=req.site.proxy))
        write_record(out, LaunchRecord(mode="doctor", image="host", site=req.site.name, command=run_argv_quoted(argv),
                                       argv=argv, expected_ranks=1, hosts=[socket.gethostname()], host_cases=host,
                                       exit_code=res.returncode, started_utc=started,
                                       duration_s=time.monotonic() - t0))
        return pipeline.show(out, req.site, req.outputs, "contprobe doctor")
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
