"""`contprobe build-check --base IMAGE [--recipe FILE]`: a real `build --fakeroot` on top of a base.

Times the build, names a failure's gotcha from the build log (the catalog's `seen_in = build`
entries), then runs the probe suite in the result through `run`'s own request.
"""
from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time

from contprobe import runtimes
from contprobe.checks import HostOptions, run_all
from contprobe.commands import args as cargs
from contprobe.commands import run as runcmd
from contprobe.inimage import catalog
from contprobe.inimage.options import EnvExpectation
from contprobe.launch import execute
from contprobe.model import Case, LaunchRecord
from contprobe.reports import pipeline
from contprobe.site import load_or_detect
from contprobe.suite import Expectations, UsageError, run_argv_quoted

NAME, HELP = "build-check", "a real `build --fakeroot` on a base image, timed, then the probes in it"
MARKER_VAR = "CONTPROBE_BUILD_CHECK"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="base image (sandbox directory, SIF or registry reference)")
    p.add_argument("--recipe", default=None, help="definition file (default: add one file and one variable)")
    p.add_argument("--runtime", default="auto", choices=["auto", *runtimes.names()])
    p.add_argument("--site", default=None)
    p.add_argument("--out", default=None, metavar="DIR")
    p.add_argument("--force", action="store_true", help="replace what a non-empty --out holds")
    p.add_argument("--cache-dir", default=None, help="runtime cache directory for the build")
    p.add_argument("--tmp-dir", default=None, help="runtime temp directory for the build")
    p.add_argument("--timeout", type=cargs.seconds, default=3600.0, metavar="S")
    cargs.add_expectations(p)
    cargs.add_outputs(p)


def default_recipe(base_path: str) -> str:
    # a registry base is bootstrapped from its registry (Bootstrap: docker / oras, From without the
    # scheme); `localimage` only takes a file or a sandbox
    scheme, sep, rest = base_path.partition("://")
    head = f"Bootstrap: {scheme}\nFrom: {rest}" if sep else f"Bootstrap: localimage\nFrom: {base_path}"
    return (f"{head}\n\n"
            f"%environment\n    export {MARKER_VAR}=1\n\n"
            f"%post\n    echo 'added by contprobe build-check' > /etc/contprobe-build-check\n")


def main(ns: argparse.Namespace) -> int:
    t0 = time.monotonic()
    site = load_or_detect(ns.site)
    outputs = cargs.outputs(ns)
    exp = Expectations.from_namespace(ns)
    if ns.recipe and not os.path.isfile(ns.recipe):
        raise UsageError(f"--recipe {ns.recipe}: no such file")
    if not ns.base.startswith(("docker://", "oras://", "library://")) and not os.path.exists(ns.base):
        raise UsageError(f"image {ns.base!r} does not exist")
    out = runcmd.prepare_out(ns.out or tempfile.mkdtemp(prefix="contprobe-build-"), ns.force)
    try:
        rt = runtimes.detect(ns.runtime if ns.runtime != "auto" else site.runtime)
    except runtimes.RuntimeNotFound:
        rt = None
    env = rt.build_env(os.environ, cachedir=ns.cache_dir, tmpdir=ns.tmp_dir) if rt else dict(os.environ)
    host = run_all(HostOptions(runtime=ns.runtime, need_runtime=True, build=True, env=env,
                               module_hint=site.runtime_module, site_proxy=site.proxy))
    rec = LaunchRecord(mode="build-check", image=ns.base, site=site.name, expected_ranks=0,
                       hosts=[socket.gethostname()], host_cases=host,
                       started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if rt is None:
        runcmd.write_record(out, rec)
        return pipeline.show(out, site, outputs, "contprobe build-check")
    recipe = ns.recipe or os.path.join(out, "build-check.def")
    if not ns.recipe:
        with open(recipe, "w") as fh:
            fh.write(default_recipe(os.path.abspath(ns.base) if os.path.exists(ns.base) else ns.base))
    target = os.path.join(out, "build-check.sif")
    argv = rt.build_argv(target, recipe, fakeroot=True, extra=("--force",))
    res = execute(argv, os.path.join(out, "build.log"), ns.timeout, env=env)
    ok = res.returncode == 0 and os.path.exists(target)
    gotcha = "" if ok else catalog.match(res.log, "build")
    if not ok and res.timed_out and gotcha == catalog.UNKNOWN:
        gotcha = "pull-stalled"
    lines = [ln for ln in res.log.strip().splitlines() if ln.strip()]
    host.append(Case("build.fakeroot", "passed" if ok else "failed", res.duration_s,
                     f"built {os.path.basename(target)} in {res.duration_s:.1f} s: {run_argv_quoted(argv)}" if ok
                     else f"build exited {res.returncode}: {' | '.join(lines[-2:])}; command: {run_argv_quoted(argv)}",
                     gotcha, catalog.get(gotcha).fix_line if gotcha else "", None,
                     "" if ok else "\n".join(lines[-30:])))
    rec.command, rec.argv = run_argv_quoted(argv), argv
    if not ok:
        rec.duration_s = time.monotonic() - t0
        runcmd.write_record(out, rec)
        return pipeline.show(out, site, outputs, "contprobe build-check")
    # The suite in the fresh image: the default recipe's variable must be there.
    if not ns.recipe:
        exp.envs.append(EnvExpectation(MARKER_VAR, "1"))
    # The build's own rows travel in the probes' launch record, so one directory holds the answer.
    return runcmd.run(runcmd.RunRequest(image=target, site=site, exp=exp, outputs=outputs, runtime=ns.runtime,
                                        out=os.path.join(out, "probes"), timeout=ns.timeout, rerun=False,
                                        mode="build-check", title="contprobe build-check", host_cases=host))
