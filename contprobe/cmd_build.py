"""`contprobe build-check --base IMAGE [--recipe FILE]`: a real `build --fakeroot` on top of a base.

Times the build, maps a failure to its gotcha (no subuid range, no user namespaces, fakeroot not
granted, no proxy, cache full, the proxy's CA unknown), then runs the probe suite in the result.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from typing import List

from contprobe import catalog, image as images, runtime as runtimes, site as sites
from contprobe.checks import HostOptions, run_all
from contprobe.cli import add_expectations, add_outputs, emit
from contprobe.reports.junit import CaseResult
from contprobe.suite import UsageError, run_argv_quoted

MARKER_VAR = "CONTPROBE_BUILD_CHECK"
BUILD_GOTCHAS = ["subuid-range-small", "user-namespaces-disabled", "fakeroot-refused", "proxy-ca-missing",
                 "proxy-missing", "cache-in-home", "starter-suid", "build-permission-denied"]


def default_recipe(base: images.Image) -> str:
    bootstrap = "localimage"
    return (f"Bootstrap: {bootstrap}\nFrom: {base.path}\n\n"
            f"%environment\n    export {MARKER_VAR}=1\n\n"
            f"%post\n    echo 'added by contprobe build-check' > /etc/contprobe-build-check\n")


def build_failure_gotcha(log: str) -> str:
    return catalog.match(log, BUILD_GOTCHAS)


def cmd_build_check(ns: argparse.Namespace) -> int:
    t0 = time.monotonic()
    try:
        site = sites.load(ns.site) if ns.site else sites.detect()
    except sites.SiteError as exc:
        raise UsageError(str(exc)) from None
    if ns.recipe and not os.path.isfile(ns.recipe):
        raise UsageError(f"--recipe {ns.recipe}: no such file")
    try:
        rt = runtimes.detect(ns.runtime)
    except runtimes.RuntimeNotFound:
        rt = None
    env = runtimes.build_env(rt, cachedir=ns.cache_dir, tmpdir=ns.tmp_dir) if rt else dict(os.environ)
    host = run_all(HostOptions(runtime=ns.runtime, need_runtime=True, build=True, env=env,
                               module_hint=site.runtime_module, site_proxy=site.proxy))
    if rt is None:
        return emit(ns, host, {"mode": "build-check", "base": ns.base}, None, title="contprobe build-check")
    try:
        base = images.resolve(ns.base) if not images.REMOTE.match(ns.base) else images.Image(ns.base, ns.base, "remote")
    except images.ImageError as exc:
        raise UsageError(str(exc)) from None
    out = os.path.abspath(ns.out or tempfile.mkdtemp(prefix="contprobe-build-"))
    os.makedirs(out, exist_ok=True)
    recipe = ns.recipe or os.path.join(out, "build-check.def")
    if not ns.recipe:
        with open(recipe, "w") as fh:
            fh.write(default_recipe(base))
    target = os.path.join(out, "build-check.sif")
    argv = runtimes.build_argv(rt, target, recipe, fakeroot=True, extra=["--force"])
    tb = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                       timeout=ns.timeout)
    build_s = time.monotonic() - tb
    with open(os.path.join(out, "build.log"), "w") as fh:
        fh.write(p.stdout)
    ok = p.returncode == 0 and os.path.exists(target)
    gotcha = "" if ok else build_failure_gotcha(p.stdout)
    lines = [l for l in p.stdout.strip().splitlines() if l.strip()]
    build = CaseResult("build.fakeroot", "passed" if ok else "failed", build_s,
                       f"built {os.path.basename(target)} in {build_s:.1f} s" if ok
                       else f"build exited {p.returncode}: {' | '.join(lines[-2:])}",
                       gotcha, catalog.get(gotcha).fix_line if gotcha else "", evidence="\n".join(lines[-30:]))
    results: List[CaseResult] = host + [build]
    context = {"mode": "build-check", "base": base.ref, "recipe": recipe, "runtime": rt.flavour,
               "runtime_version": rt.version, "command": run_argv_quoted(argv), "build_s": f"{build_s:.2f}",
               "results_dir": out}
    if ok:
        # The suite in the fresh image: the default recipe's variable must be there.
        run_ns = argparse.Namespace(**{**vars(ns), "image": target, "out": os.path.join(out, "probes"),
                                       "json": None, "junit": None, "markdown": None,
                                       "expect_env": ns.expect_env + ([f"{MARKER_VAR}=1"] if not ns.recipe else [])})
        from contprobe.cmd_run import make_plan
        from contprobe.launch import launch_and_collect
        from contprobe.ranks import aggregate
        plan, _, _, run_out = make_plan(run_ns)
        res, ranks, lost, _ = launch_and_collect(plan, run_out, ns.timeout)
        results += aggregate(ranks, lost, f"launch exit code {res.returncode}")
        context["probe_command"] = run_argv_quoted(plan.argv())
    context["duration_s"] = f"{time.monotonic() - t0:.2f}"
    return emit(ns, results, context, None, title="contprobe build-check")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-check", help="a real `build --fakeroot` on a base image, timed, then the probes in it")
    p.add_argument("--base", required=True, help="base image (sandbox directory, SIF or registry reference)")
    p.add_argument("--recipe", default=None, help="definition file (default: add one file and one variable)")
    p.add_argument("--runtime", default="auto", choices=["auto", "apptainer", "singularity"])
    p.add_argument("--site", default=None)
    p.add_argument("--out", default=None, metavar="DIR")
    p.add_argument("--cache-dir", default=None, help="runtime cache directory for the build")
    p.add_argument("--tmp-dir", default=None, help="runtime temp directory for the build")
    p.add_argument("--timeout", type=float, default=3600.0, metavar="S")
    # what `run` needs for the probe phase
    for name, default in (("nv", False), ("cleanenv", False), ("no_rerun", True)):
        p.set_defaults(**{name: default})
    p.set_defaults(binds=[], envs=[], python="python3", ranks=1, ppn=None, launcher="none", hostfile=None,
                   gpu_bind="none")
    add_expectations(p)
    add_outputs(p)
    p.set_defaults(func=cmd_build_check)
