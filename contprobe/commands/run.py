"""`contprobe run IMAGE`: the probe suite inside a real container, optionally as every rank of a launch.

Writes a results directory (launch.json, ranks/, launch.log) and shows it through the one
pipeline, so `contprobe report DIR` gives the same answer afterwards.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from contprobe import harness, image as images, launchers, pycache, runtimes, safeio, schedulers, textsafe
from contprobe.checks import HostOptions, run_all
from contprobe.commands import args as cargs
from contprobe.inimage import catalog
from contprobe.launch import ALL_WROTE, LaunchResult, Plan, execute
from contprobe.launchers import nodelog
from contprobe.model import Case, LaunchRecord, LostRank
from contprobe.reports import pipeline
from contprobe.reports.collect import JOURNAL_FILE, RANK_FILE, read_rank_file
from contprobe.rerun import plan_reruns, run_reruns
from contprobe.site import Site, load_or_detect
from contprobe.suite import Expectations, UsageError, run_argv_quoted

NAME, HELP = "run", "run the probe suite inside a container image (optionally under MPI)"


@dataclass
class RunRequest:
    image: str
    site: Site
    exp: Expectations
    outputs: pipeline.Outputs
    runtime: str = "auto"
    nv: bool = False
    binds: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    cleanenv: bool = False
    python: str = "python3"
    ranks: int = 1
    ppn: Optional[int] = None
    launcher: Optional[str] = None
    hostfile: Optional[str] = None
    gpu_bind: str = "auto"
    out: Optional[str] = None
    force: bool = False
    timeout: float = 1800.0
    grace: Optional[float] = None
    rerun: bool = True
    strict: bool = False
    cache_dir: Optional[str] = None
    mode: str = "run"
    title: str = "contprobe run"
    host_cases: Optional[List[Case]] = None    # rows a calling command already has (build-check's build)


def add_arguments(p: argparse.ArgumentParser) -> None:
    cargs.add_container_args(p)
    cargs.add_expectations(p)
    cargs.add_outputs(p)


def request(ns: argparse.Namespace, site: Optional[Site] = None) -> RunRequest:
    return RunRequest(image=ns.image, site=site or load_or_detect(ns.site), exp=Expectations.from_namespace(ns),
                      outputs=cargs.outputs(ns), runtime=ns.runtime, nv=ns.nv,
                      binds=[cargs.parse_bind(b) for b in ns.binds],
                      env=dict(cargs.parse_env_pair(e) for e in ns.envs), cleanenv=ns.cleanenv, python=ns.python,
                      ranks=ns.ranks or 1, ppn=ns.ppn, launcher=ns.launcher, hostfile=ns.hostfile,
                      gpu_bind=ns.gpu_bind, out=ns.out, force=ns.force, timeout=ns.timeout, grace=ns.grace,
                      rerun=not ns.no_rerun, strict=ns.strict, cache_dir=ns.cache_dir)


def main(ns: argparse.Namespace) -> int:
    return run(request(ns))


# ---- the results directory -----------------------------------------------------------------------
def user_cache() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                        "contprobe")


def default_out(image_ref: str) -> str:
    stem = os.path.basename(image_ref.rstrip("/")).split(".")[0] or "image"
    return os.path.join("contprobe-results", f"{stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")


def prepare_out(out: str, force: bool) -> str:
    """A fresh results directory owned by the operator: refuse a non-empty one unless --force."""
    out = os.path.abspath(out)
    if os.path.islink(out) or (os.path.exists(out) and not os.path.isdir(out)):
        raise UsageError(f"--out {out}: not a directory")
    try:
        empty = safeio.is_empty_dir(out)
    except OSError as exc:   # e.g. a parent this user cannot enter
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from None
    if empty is False:
        if not force:
            raise UsageError(f"--out {out} is not empty: give a new directory, or --force to replace its contents")
        if os.lstat(out).st_uid != os.getuid():
            raise UsageError(f"--out {out} belongs to another user")
        for name in os.listdir(out):
            p = os.path.join(out, name)
            harness.remove_tree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
    try:
        os.makedirs(out, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: not writable")
    return out


def write_record(out: str, rec: LaunchRecord) -> None:
    safeio.write_text(os.path.join(out, "launch.json"),
                      pipeline.redact_document(textsafe.json_dumps(rec.to_json(), indent=2), "json") + "\n")


# ---- planning ----------------------------------------------------------------------------------
def host_gpus() -> bool:
    from contprobe.inimage.context import run_cmd
    rc, out, _ = run_cmd(["nvidia-smi", "-L"], 30)
    return rc == 0 and "GPU" in out


def make_plan(req: RunRequest, out: str, host: List[Case]) -> Optional[Plan]:
    """Everything that decides the launch, checked before anything starts; None without a runtime."""
    site = req.site
    try:
        rt = runtimes.detect(req.runtime if req.runtime != "auto" else site.runtime)
    except runtimes.RuntimeNotFound:
        if not (req.image.startswith("/") or os.path.exists(req.image)) and "://" not in req.image:
            raise UsageError(f"image {req.image!r} does not exist") from None
        return None
    if not rt.is_remote(req.image) and not os.path.exists(req.image):
        raise UsageError(f"image {req.image!r} does not exist")
    launcher_name = req.launcher or ("none" if req.ranks == 1 else "auto")
    if launcher_name == "auto":
        launcher_name = launchers.detect(site_launcher=site.launcher)
    if launcher_name == "none" and req.ranks > 1:
        raise UsageError(f"--ranks {req.ranks} needs a launcher and none was found (give --launcher)")
    launcher = None
    if launcher_name != "none":
        try:
            launcher = launchers.get(launcher_name)
        except launchers.MismatchError as exc:
            host.append(Case("launch.launcher", "failed", 0.0, str(exc), "launcher-mismatch",
                             catalog.get("launcher-mismatch").fix_line))
            return None
        except launchers.LauncherError as exc:
            raise UsageError(str(exc)) from None
    if req.hostfile and not os.path.isfile(req.hostfile):
        raise UsageError(f"--hostfile {req.hostfile}: no such file")
    try:
        img = rt.resolve(req.image, req.cache_dir or os.path.join(user_cache(), "images"), req.timeout)
    except images.ConversionFailed as exc:
        host.append(Case("pull.convert", "failed", 0.0, str(exc), exc.gotcha, catalog.get(exc.gotcha).fix_line,
                         None, catalog.excerpt(exc.log, 4000)))
        return None
    except images.ImageError as exc:
        raise UsageError(str(exc)) from None
    own = launcher is not None and launcher.name == site.launcher
    # srun gets the allocation's hosts it should use: nightly gives each image its own slice.
    span = tuple(planned_hosts(req)) if launcher is not None and launcher.name == "srun" and req.ppn else ()
    req_l = launchers.LaunchRequest(
        ranks=req.ranks, ppn=req.ppn, hostfile=req.hostfile, hosts=span,
        depth=site.launcher_depth or None if own else None,
        cpu_bind=(site.launcher_cpu_bind or None) if own else None,
        extra=site.launcher_args if own else ())
    gpus = site.gpus_per_node if (req.nv and req.ranks > 1 and req.gpu_bind == "auto") else 0
    return Plan(rt=rt, image=img, python=req.python, binds=req.binds, env=req.env, nv=req.nv,
                cleanenv=req.cleanenv, exp=req.exp, harness_dir=os.path.join(out, ".harness"),
                results_dir=os.path.join(out, "ranks"), ranks=req.ranks, launcher=launcher,
                launch_req=req_l, gpus_per_node=gpus, gpu_order=site.gpu_order,
                grace_s=req.grace or site.grace_s, pycache_dir=pycache.prepare(user_cache(), img.path) or "")


# ---- what the launch log says about ranks that never reported --------------------------------------
def planned_hosts(req: RunRequest) -> List[str]:
    """The hosts a multi-rank launch spans, in placement order: the hostfile's, else the allocation's
    (the first ceil(ranks/ppn) of them); empty when neither is known."""
    if req.ranks <= 1:
        return []
    if req.hostfile:
        hosts = launchers.hosts_from_nodefile(req.hostfile)
    else:
        alloc = schedulers.current(preferred=req.site.scheduler)
        hosts = list(alloc.hosts) if alloc else []
    return hosts[:-(-req.ranks // req.ppn)] if hosts and req.ppn else hosts


def _node_findings(log: str, image: str, started: Set[str]) -> Dict[str, nodelog.NodeFault]:
    """Nodes the launcher blamed; 'cannot open the image' counts against a node only where the image
    exists here and none of that node's ranks started."""
    here = os.path.exists(image) and catalog.match(log, "launch", among=["image-unreadable"]) == "image-unreadable"
    return {f.host: f for f in nodelog.node_faults(log, image_missing=here)
            if f.gotcha != "image-missing-on-node" or f.host not in started}


def lost_ranks(results_dir: str, expected: int, res: LaunchResult, hosts: Sequence[str] = (),
               image: str = "") -> Tuple[List[LostRank], List[nodelog.NodeFault]]:
    """Ranks without a JUnit file, each on its host (its journal's, the launcher's task line, or block
    placement over `hosts`) with the cause the launch log names; and the nodes the log blames."""
    names = os.listdir(results_dir)
    wrote = {int(m.group(1)): m.group(2) for m in map(RANK_FILE.match, names) if m}
    journals = {int(m.group(1)): m.group(2) for m in map(JOURNAL_FILE.match, names) if m}
    if res.interrupted:
        why = f"contprobe was stopped ({signal.Signals(res.interrupted).name})"
    elif res.timed_out:
        why = "launch timed out (--timeout)"
    elif res.ended_early:
        why = f"launch ended after the grace period ({res.ended_early})"
    else:
        why = f"launch exit code {res.returncode}"
    gotcha = catalog.match(res.log, "launch")
    gotcha = "rank-lost" if gotcha == catalog.UNKNOWN else gotcha
    faults = _node_findings(res.log, image, set(wrote.values()) | set(journals.values()))
    ends = nodelog.task_ends(res.log)
    per = -(-expected // len(hosts)) if hosts else 0
    lost = []
    for r in range(expected):
        if r in wrote:
            continue
        host = journals.get(r) or ends.get(r, ("",))[0] or (hosts[min(r // per, len(hosts) - 1)] if per else "?")
        what = "ended before writing its JUnit" if r in journals else "no result file"
        fault = faults.get(host)
        if fault is not None:
            lost.append(LostRank(r, host, f"{what}; node {host}: {fault.evidence}; {why}", fault.gotcha))
        elif faults:   # a healthy node's rank, ended with the step (srun cancels it on every node)
            lost.append(LostRank(r, host, f"{what}; ended with the launch after node {', '.join(faults)} "
                                          f"failed; {why}", next(iter(faults.values())).gotcha))
        else:
            lost.append(LostRank(r, host, f"{what}; {why}", gotcha))
    return lost, list(faults.values())


# Image drivers Apptainer runs under FUSE (non-setuid mode): one that outlives its container keeps
# the launcher's output pipe open, so the launcher waits for it.
FUSE_DRIVERS = ("squashfuse_ll", "squashfuse", "fuse-overlayfs", "fuse2fs", "gocryptfs")


def lingered(res: LaunchResult, grace_s: float) -> Case:
    """Every rank wrote its results, yet the launch went on: named only from what was still running."""
    if res.ranks_left:
        gotcha = "mpi-finalize-hang"       # the ranks' own processes never exited
    elif any(name in FUSE_DRIVERS for name in res.killed):
        gotcha = "fuse-driver-lingers"     # the ranks left; their image's FUSE driver did not
    else:
        gotcha = catalog.UNKNOWN          # what holds it is on another node, or not one we know
    left = ", ".join(res.killed) or "nothing on this host"
    return Case("launch.exit", "warning", res.duration_s, f"ended {grace_s:g} s after {ALL_WROTE}; "
                f"rank processes left on this host: {res.ranks_left}; still running: {left}",
                gotcha, catalog.get(gotcha).fix_line)


def node_cases(faults: Sequence[nodelog.NodeFault]) -> List[Case]:
    """One failed host-side row per node the launcher blamed: the report names the host to drain."""
    return [Case(f"launch.node[{f.host}]", "failed", 0.0, f"drain {f.host}: {f.evidence}", f.gotcha,
                 catalog.get(f.gotcha).fix_line, None, f.evidence) for f in faults]


def last_lines(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


# ---- the command -------------------------------------------------------------------------------
def run(req: RunRequest) -> int:
    t0 = time.monotonic()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = prepare_out(req.out or default_out(req.image), req.force)
    runtime = req.runtime if req.runtime != "auto" else req.site.runtime   # the site profile picks it
    host = list(req.host_cases) if req.host_cases is not None else \
        run_all(HostOptions(runtime=runtime, need_runtime=True, pulls="://" in req.image,
                            module_hint=req.site.runtime_module, site_proxy=req.site.proxy))
    rec = LaunchRecord(mode=req.mode, image=req.image, site=req.site.name, expected_ranks=req.ranks,
                       hosts=[socket.gethostname()], started_utc=started, host_cases=host)
    plan = make_plan(req, out, host)
    if plan is None:  # no runtime, a shadowing launcher or a failed pull: the host rows say which
        rec.expected_ranks = 0
        rec.duration_s = time.monotonic() - t0
        write_record(out, rec)
        return pipeline.show(out, req.site, req.outputs, req.title, req.strict)

    digest: Dict[str, str] = {}
    hasher = threading.Thread(target=lambda: digest.setdefault("d", plan.image.digest(user_cache())), daemon=True)
    hasher.start()  # hashing a multi-GB SIF overlaps with the launch instead of adding to it
    plan.harness_dir = harness.prepare(out, user_cache())
    os.makedirs(plan.results_dir, mode=0o700)
    argv, env = plan.argv()
    rec.argv, rec.command = argv, run_argv_quoted(argv, env)
    rec.image_kind, rec.runtime, rec.launcher = plan.image.kind, f"{plan.rt.name} {plan.rt.version}", plan.launcher_name
    res = execute(argv, os.path.join(out, "launch.log"), req.timeout, env=env, results_dir=plan.results_dir,
                  expected=plan.ranks, grace_s=plan.grace_s, container_died=plan.rt.died_line)
    rec.exit_code, rec.timed_out = res.returncode, res.timed_out
    rec.hosts = (planned_hosts(req) if plan.launcher is not None else []) or rec.hosts
    rec.lost, faults = lost_ranks(plan.results_dir, plan.ranks, res, rec.hosts, plan.image.path)
    rec.host_cases += node_cases(faults)
    if res.ended_early == ALL_WROTE and not rec.lost:
        rec.host_cases.append(lingered(res, plan.grace_s))
    if len(rec.lost) == plan.ranks and not os.listdir(plan.results_dir):
        gotcha = catalog.match(res.log, "launch")
        rec.host_cases.append(Case("launch.container", "error", res.duration_s, f"no results: {last_lines(res.log)}",
                                   gotcha, catalog.get(gotcha).fix_line, None, catalog.excerpt(res.log, 4000)))
    if req.rerun and not res.interrupted and len(rec.lost) < plan.ranks:
        cases: List[Case] = []
        for name in sorted(os.listdir(plan.results_dir)):
            if RANK_FILE.match(name):
                _, kind, rank = read_rank_file(os.path.join(plan.results_dir, name), explicit=False)
                cases += rank.cases if kind == "ok" else []
        todo = plan_reruns(cases, plan, host_gpus())
        rec.reruns = run_reruns(plan, todo, out, min(req.timeout, 600))
    hasher.join(timeout=0 if res.interrupted else None)
    rec.image_digest = digest.get("d", "")
    rec.duration_s = time.monotonic() - t0
    write_record(out, rec)
    code = pipeline.show(out, req.site, req.outputs, req.title, req.strict)
    if res.killed:
        sys.stderr.write(f"contprobe: ended leftover processes of the launch: {', '.join(res.killed)}\n")
    return 128 + res.interrupted if res.interrupted else code
