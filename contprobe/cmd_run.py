"""`contprobe run IMAGE` and `contprobe validate IMAGE`: the probe suite inside real containers.

One launch of the image (under a parallel launcher when --ranks > 1), one JUnit file per rank,
lost ranks named, failures confirmed by cheap re-runs that change one thing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

from contprobe import catalog, image as images, launcher as launchers, runtime as runtimes, site as sites
from contprobe.checks import HostOptions, run_all
from contprobe.cli import add_expectations, add_outputs, emit, expectations
from contprobe.expect import valid_name
from contprobe.launch import Plan, launch_and_collect
from contprobe.ranks import aggregate, merged_junit, placement_map, placement_table, tail
from contprobe.reports.junit import CaseResult
from contprobe.rerun import apply_findings, plan_reruns, run_reruns
from contprobe.suite import UsageError, run_argv_quoted

# ---- arguments -------------------------------------------------------------------------------
def parse_bind(text: str) -> str:
    src, _, rest = text.partition(":")
    if not src:
        raise UsageError(f"-B {text!r}: empty source path")
    if not os.path.isabs(src):
        raise UsageError(f"-B {text!r}: the source must be an absolute path")
    if not os.path.exists(src):
        raise UsageError(f"-B {text!r}: bind source {src} does not exist on this host")
    dst, _, opts = rest.partition(":")
    if dst and not dst.startswith("/"):
        raise UsageError(f"-B {text!r}: the destination must be an absolute path")
    for o in filter(None, opts.split(",")):
        if o not in ("ro", "rw"):
            raise UsageError(f"-B {text!r}: unknown bind option {o!r} (ro or rw)")
    return text


def parse_env_pair(text: str) -> Tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not valid_name(name):
        raise UsageError(f"--env {text!r}: expected NAME=VALUE")
    return name, value


def add_container_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="SIF file, sandbox directory, or docker:// / oras:// reference")
    p.add_argument("--runtime", default="auto", choices=["auto", "apptainer", "singularity"])
    p.add_argument("--nv", action="store_true", help="pass --nv (NVIDIA GPUs) to the runtime")
    p.add_argument("-B", "--bind", dest="binds", action="append", default=[], metavar="SRC[:DST[:OPTS]]")
    p.add_argument("--env", dest="envs", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--cleanenv", action="store_true", help="pass --cleanenv (off unless asked)")
    p.add_argument("--python", default="python3", help="the image's Python (default python3)")
    p.add_argument("--ranks", type=int, default=1, metavar="N")
    p.add_argument("--ppn", type=int, default=None, metavar="P", help="ranks per node")
    p.add_argument("--launcher", default=None, choices=sorted(launchers.LAUNCHERS) + ["auto"])
    p.add_argument("--hostfile", default=None, help="hosts for the launcher (default $PBS_NODEFILE)")
    p.add_argument("--gpu-bind", choices=["auto", "none"], default="auto",
                   help="auto: one GPU per local rank (site order) when --nv and ranks > 1")
    p.add_argument("--site", default=None, help=f"site profile ({', '.join(sites.available())}); default: detect")
    p.add_argument("--out", default=None, metavar="DIR", help="results directory (default ./contprobe-results/...)")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S", help="whole launch timeout")
    p.add_argument("--no-rerun", action="store_true", help="do not confirm failures with re-runs")
    p.add_argument("--cache-dir", default=None, help="where registry images are converted to SIF")


# ---- the command -----------------------------------------------------------------------------------
def host_gpus() -> bool:
    from contprobe.context import run_cmd
    rc, out, _ = run_cmd(["nvidia-smi", "-L"], 30)
    return rc == 0 and "GPU" in out


def user_cache() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                        "contprobe")


def default_out(image_ref: str) -> str:
    stem = os.path.basename(image_ref.rstrip("/")).split(".")[0] or "image"
    return os.path.join("contprobe-results", f"{stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")


def flag_value(args, flag: str) -> Optional[str]:
    """The value after flag in an argument list (the site profile's launcher_args), or None."""
    args = list(args)
    return args[args.index(flag) + 1] if flag in args[:-1] else None


def make_plan(ns: argparse.Namespace) -> Tuple[Plan, sites.Site, List[CaseResult], str]:
    """Validate everything before anything starts; bad input is a UsageError (exit 2)."""
    exp = expectations(ns)
    try:
        site = sites.load(ns.site) if ns.site else sites.detect()
    except sites.SiteError as exc:
        raise UsageError(str(exc)) from None
    if ns.ranks < 1:
        raise UsageError(f"--ranks must be >= 1, not {ns.ranks}")
    if ns.ppn is not None and ns.ppn < 1:
        raise UsageError(f"--ppn must be >= 1, not {ns.ppn}")
    binds = [parse_bind(b) for b in ns.binds]
    env = dict(parse_env_pair(e) for e in ns.envs)
    remote = bool(images.REMOTE.match(ns.image))
    host = run_all(HostOptions(runtime=ns.runtime, need_runtime=True, pulls=remote,
                               module_hint=site.runtime_module, site_proxy=site.proxy))
    try:
        # A local image is checked before the runtime: a bad path is bad input even without one.
        img = None if remote else images.resolve(ns.image)
        rt = runtimes.detect(ns.runtime)
        if img is None:  # a registry reference is converted once the runtime is known
            img = images.resolve(ns.image, rt, ns.cache_dir or os.path.join(user_cache(), "images"))
    except images.ImageError as exc:
        raise UsageError(str(exc)) from None
    except runtimes.RuntimeNotFound:
        return None, site, host, ""  # type: ignore[return-value]
    launcher = ns.launcher or ("none" if ns.ranks == 1 else "auto")
    if launcher == "auto":
        launcher = launchers.detect(site_launcher=site.launcher)
    if launcher == "none" and ns.ranks > 1:
        raise UsageError(f"--ranks {ns.ranks} needs a launcher and none was found (give --launcher)")
    hostfile = ns.hostfile or (os.environ.get("PBS_NODEFILE") if launcher in ("pals", "hydra", "openmpi") else None)
    if hostfile and not os.path.isfile(hostfile):
        raise UsageError(f"--hostfile {hostfile}: no such file")
    pals_args = site.launcher_args if launcher == "pals" else ()
    depth = flag_value(pals_args, "--depth")
    req = launchers.LaunchRequest(ranks=ns.ranks, ppn=ns.ppn, hostfile=hostfile,
                                  depth=int(depth) if depth else None, cpu_bind=flag_value(pals_args, "--cpu-bind"))
    gpus = site.gpus_per_node or (ns.ppn or 0)
    out = os.path.abspath(ns.out or default_out(ns.image))
    plan = Plan(rt=rt, image=img, python=ns.python, spec_binds=binds, spec_env=env, nv=ns.nv, cleanenv=ns.cleanenv,
                exp=exp, harness_dir=os.path.join(out, ".harness"), results_dir=os.path.join(out, "ranks"),
                ranks=ns.ranks, ppn=ns.ppn, launcher=launcher, launch_req=req,
                gpus_per_node=gpus if (ns.gpu_bind == "auto" and ns.nv and ns.ranks > 1) else 0,
                gpu_order=site.gpu_order)
    return plan, site, host, out


def cmd_run(ns: argparse.Namespace) -> int:
    t0 = time.monotonic()
    plan, site, host, out = make_plan(ns)
    if plan is None:  # no runtime: the host check says which gotcha and the fix
        ctx = {"mode": "run", "image": ns.image, "site": site.name}
        return emit(ns, host, ctx, None, title="contprobe run")
    digest: Dict[str, str] = {}
    hasher = threading.Thread(target=lambda: digest.setdefault("d", plan.image.digest(user_cache())), daemon=True)
    hasher.start()  # hashing a multi-GB SIF overlaps with the launch instead of adding to it
    argv = plan.argv()
    res, ranks, lost, unreadable = launch_and_collect(plan, out, ns.timeout)
    reason = (f"launch timed out after {ns.timeout:g} s" if res.timed_out
              else f"launch exit code {res.returncode}; last output: {tail(res.log)}")
    results = host + aggregate(ranks, lost, reason, res.log)
    for item in lost:  # the report merges launches later: keep the precise cause with each lost rank
        item["gotcha"] = next((r.gotcha for r in results if r.probe == f"launch.rank[{item['rank']}]"), "rank-lost")
    if not ranks and not lost:
        results.append(CaseResult("launch.container", "error", res.duration_s, f"no results: {tail(res.log)}",
                                  catalog.match(res.log), catalog.get(catalog.match(res.log)).fix_line))
    reruns: List[dict] = []
    if not ns.no_rerun and ranks:
        todo = plan_reruns(results, plan, host_gpus())
        reruns = run_reruns(plan, todo, out, min(ns.timeout, 600))
        apply_findings(results, reruns)
    hasher.join()
    rank0 = min(ranks, key=lambda r: r.rank).context if ranks else {}
    context = {**{k: v for k, v in rank0.items() if k not in ("rank", "local_rank", "command")},
               "mode": "run", "site": site.name, "image": plan.image.ref, "image_path": plan.image.path,
               "image_kind": plan.image.kind, "image_digest": digest.get("d", ""),
               "runtime": plan.rt.flavour, "runtime_version": plan.rt.version,
               "launcher": plan.launcher, "ranks": str(plan.ranks), "ranks_reported": str(len(ranks)),
               "command": run_argv_quoted(argv), "results_dir": out,
               "duration_s": f"{time.monotonic() - t0:.2f}"}
    launch = {"command": run_argv_quoted(argv), "argv": argv, "image": plan.image.ref,
              "image_digest": context["image_digest"], "runtime": plan.rt.describe(),
              "expected_ranks": plan.ranks, "hosts": sorted({r.host for r in ranks}),
              "reruns": reruns, "lost": lost, "unreadable": unreadable, "exit_code": res.returncode,
              "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (time.monotonic() - t0))),
              "duration_s": round(time.monotonic() - t0, 3), "pytest": rank0.get("pytest", ""),
              "pytest_source": rank0.get("pytest_source", "")}
    from contprobe.redact import redact_obj
    with open(os.path.join(out, "launch.json"), "w") as fh:
        json.dump(redact_obj(launch), fh, indent=2)
    placement = placement_map(ranks)
    if len(ranks) > 1:
        (sys.stderr if ns.json == "-" else sys.stdout).write(placement_table(placement) + "\n\n")
    written = [r for r in ranks if r.path.endswith(".xml")]  # journals of lost ranks are no JUnit
    junit_src = merged_junit(written, out) if written else None
    return emit(ns, results, context, junit_src, extra={"reruns": reruns, "lost": lost, "placement": placement}, title="contprobe run")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the probe suite inside a container image (optionally under MPI)")
    add_container_args(p)
    add_expectations(p)
    add_outputs(p)
    p.set_defaults(func=cmd_run)


# ---- the publish gate ------------------------------------------------------------------------------
def validate_defaults(ns: argparse.Namespace, site: sites.Site, env=None) -> argparse.Namespace:
    """Full validation for a site: GPUs, its file systems, every rank of the allocation."""
    env = os.environ if env is None else env
    if site.gpus_per_node:
        ns.nv = True
    for path in site.default_binds:
        if os.path.exists(path):
            if not any(b.split(":")[0] == path for b in ns.binds):
                ns.binds.append(path)
            if not any(e.split(":")[0] == path for e in ns.expect_bind):
                ns.expect_bind.append(path)
    nodefile = ns.hostfile or env.get("PBS_NODEFILE")
    if ns.ranks == 1 and nodefile and os.path.isfile(nodefile) and site.gpus_per_node:
        ns.ranks = len(launchers.hosts_from_nodefile(nodefile)) * site.gpus_per_node
        ns.ppn = ns.ppn or site.gpus_per_node
    if ns.expect_gpus is None and site.gpus_per_node:
        ns.expect_gpus = 1 if ns.ranks > 1 else site.gpus_per_node
    if ns.expect_ranks is None and ns.ranks > 1:
        ns.expect_ranks = ns.ranks
    return ns


def cmd_validate(ns: argparse.Namespace) -> int:
    try:
        site = sites.load(ns.site) if ns.site else sites.detect()
    except sites.SiteError as exc:
        raise UsageError(str(exc)) from None
    ns.site = site.name
    return cmd_run(validate_defaults(ns, site))


def register_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="publish gate: the image's full validation for a site; nonzero on any "
                                        "failure or lost rank")
    add_container_args(p)
    add_expectations(p)
    add_outputs(p)
    p.set_defaults(func=cmd_validate)


def register_all(sub: argparse._SubParsersAction) -> None:
    register(sub)
    register_validate(sub)
