"""`contprobe run IMAGE` and `contprobe validate IMAGE`: the probe suite inside real containers.

One launch of the image (under a parallel launcher when --ranks > 1), one JUnit file per rank,
lost ranks named, failures confirmed by cheap re-runs that change one thing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from contprobe import catalog, harness, image as images, launcher as launchers, runtime as runtimes, site as sites
from contprobe.checks import HostOptions, run_all
from contprobe.cli import add_expectations, add_outputs, emit, expectations
from contprobe.reports import junit, partial
from contprobe.reports.junit import CaseResult
from contprobe.suite import Expectations, UsageError, run_argv_quoted

FAILING = ("failed", "error", "lost")
GPU_GOTCHAS = ("nv-flag-missing",)
# What a launch's own output can tell about ranks that never reported.
LAUNCH_GOTCHAS = ["ucx-shm-proc-link", "ucx-cma-eperm", "mpi-abi-openmpi", "mpi4py-wheel-libmpi", "pals-openmpi-flags",
                  "gtl-not-linked", "image-unreadable", "ld-preload-leak", "nv-flag-missing",
                  "user-namespaces-disabled", "ld-library-path-replaced"]


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
    if not eq or not name or not (name[0].isalpha() or name[0] == "_") or \
            not all(c.isalnum() or c == "_" for c in name):
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


# ---- one launch ------------------------------------------------------------------------------
@dataclass
class Plan:
    """Everything that decides a launch; turned into an argument list by `argv`."""
    rt: runtimes.Runtime
    image: images.Image
    python: str
    spec_binds: List[str]
    spec_env: Dict[str, str]
    nv: bool
    cleanenv: bool
    exp: Expectations
    harness_dir: str
    results_dir: str
    ranks: int = 1
    ppn: Optional[int] = None
    launcher: str = "none"
    launch_req: Optional[launchers.LaunchRequest] = None
    gpus_per_node: int = 0
    gpu_order: str = "natural"

    def argv(self, results_dir: Optional[str] = None, targets: Tuple[str, ...] = (),
             nv: Optional[bool] = None, binds: Tuple[str, ...] = (), env: Optional[Dict[str, str]] = None,
             single: bool = False) -> List[str]:
        rdir = results_dir or self.results_dir
        exp = self.exp
        if targets:  # re-runs name exact probes; the user's -k/-m could only deselect them
            exp = dataclasses.replace(exp, keyword=None, markexpr=None)
        # --capture=sys: what C libraries (UCX, NCCL, the MPI) write to fd 2 reaches the launch log,
        # which is the only evidence left when they abort a rank.
        pytest_args = ["-q", "-rN", "--color=no", "--capture=sys", "--results-dir", harness.RESULTS_MOUNT] \
            + exp.pytest_args()
        spec = runtimes.ExecSpec(
            image=self.image.path,
            command=harness.bootstrap_command(self.python, pytest_args, list(targets),
                                              0 if single else self.gpus_per_node, self.gpu_order),
            nv=self.nv if nv is None else nv,
            binds=[*self.spec_binds, *binds, f"{self.harness_dir}:{harness.MOUNT}:ro", f"{rdir}:{harness.RESULTS_MOUNT}"],
            env={**self.spec_env, **(env or {})}, cleanenv=self.cleanenv)
        inner = runtimes.exec_argv(self.rt, spec)
        if single or self.launcher == "none":
            return inner
        return launchers.LAUNCHERS[self.launcher].argv(self.launch_req) + inner


@dataclass
class LaunchResult:
    argv: List[str]
    returncode: int
    log: str
    duration_s: float
    timed_out: bool = False


def execute(argv: List[str], log_path: str, timeout: float) -> LaunchResult:
    """Run one launch in its own process group so a hang can be ended whole."""
    t0 = time.monotonic()
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        try:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            log.write(f"{argv[0]}: {exc}\n")
            return LaunchResult(argv, 127, str(exc), time.monotonic() - t0)
        timed_out = False
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = 124
            log.write(f"\n[contprobe] launch killed after {timeout:g} s\n")
    with open(log_path, errors="replace") as fh:
        text = fh.read()
    return LaunchResult(argv, rc, text, time.monotonic() - t0, timed_out)


# ---- results over ranks ------------------------------------------------------------------------
def collect(results_dir: str, expected: int) -> Tuple[List[junit.RankResult], List[dict], List[str]]:
    """Rank files in a results dir: (read ranks, lost ranks, unreadable-file messages)."""
    ranks: List[junit.RankResult] = []
    problems: List[str] = []
    for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        if name.startswith("junit-r") and name.endswith(".xml"):
            try:
                ranks.append(junit.read(os.path.join(results_dir, name)))
            except junit.JUnitError as exc:
                problems.append(str(exc))
    seen = {r.rank for r in ranks}
    lost: List[dict] = []
    journals = {}
    for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        if name.startswith("partial-r") and name.endswith(".jsonl"):
            pr = partial.read(os.path.join(results_dir, name))
            journals.setdefault(pr.rank, pr)
    for r in range(expected):
        if r in seen:
            continue
        pr = journals.get(r)
        if pr is not None:  # it crashed or hung: keep what it finished, name it lost
            ranks.append(pr)
            crashed = [c.probe for c in pr.cases if c.message == partial.CRASHED]
            lost.append({"rank": r, "host": pr.host, "reason": f"died during {crashed[0]}" if crashed
                         else "ended before writing its JUnit", "kept_results": len(pr.cases)})
        else:
            lost.append({"rank": r, "host": "?", "reason": "no result file (never started?)"})
    return ranks, lost, problems


def aggregate(ranks: List[junit.RankResult], lost: List[dict], reason: str,
              launch_log: str = "") -> List[CaseResult]:
    """One row per probe over all ranks: agreement collapses, disagreement names the ranks."""
    by_probe: Dict[str, List[Tuple[int, str, CaseResult]]] = {}
    for rr in ranks:
        for c in rr.cases:
            by_probe.setdefault(c.probe, []).append((rr.rank, rr.host, c))
    out: List[CaseResult] = []
    n = len(ranks)
    for probe, rows in by_probe.items():
        worst = min(rows, key=lambda t: ("error", "failed", "passed", "skipped").index(t[2].outcome)
                    if t[2].outcome in ("error", "failed", "passed", "skipped") else 0)
        c = worst[2]
        outcomes = {t[2].outcome for t in rows}
        message = c.message
        if n > 1:
            if len(outcomes) == 1:
                message = f"{len(rows)}/{n} ranks {c.outcome}" + (f": {c.message}" if c.message else "")
            else:
                bad = [f"{t[0]}@{t[1]}" for t in rows if t[2].outcome == c.outcome]
                message = f"{c.outcome} on ranks {', '.join(bad)} ({len(bad)}/{n})" + (f": {c.message}" if c.message else "")
        out.append(CaseResult(probe=probe, outcome=c.outcome, duration_s=max(t[2].duration_s for t in rows),
                              message=message, gotcha=c.gotcha, fix=c.fix, metrics=c.metrics, evidence=c.evidence))
    # A lost rank is rank-lost unless the launch's output names a more precise cause.
    gotcha = catalog.match(launch_log, LAUNCH_GOTCHAS) if launch_log else catalog.UNKNOWN
    gotcha = "rank-lost" if gotcha == catalog.UNKNOWN else gotcha
    fix = catalog.get(gotcha).fix_line
    for c in out:
        if c.message.endswith(partial.CRASHED) or partial.CRASHED in c.message:
            c.gotcha, c.fix = gotcha, fix
    for item in lost:
        out.append(CaseResult(probe=f"launch.rank[{item['rank']}]", outcome="lost", duration_s=0.0,
                              message=f"rank {item['rank']} lost: {item['reason']}; {reason}",
                              gotcha=gotcha, fix=fix))
    return out


# ---- diagnosis by re-run -------------------------------------------------------------------------
@dataclass
class Rerun:
    probes: List[str]
    change: str
    finding: str
    nv: Optional[bool] = None
    binds: Tuple[str, ...] = ()
    env: Dict[str, str] = field(default_factory=dict)


def plan_reruns(results: List[CaseResult], plan: Plan, host_has_gpus: bool) -> List[Rerun]:
    """One cheap re-run per hypothesis, each changing exactly one thing."""
    failing = [r for r in results if r.outcome in ("failed", "error") and not r.probe.startswith(("host.", "launch."))]
    out: List[Rerun] = []
    gpu = [r.probe for r in failing if r.gotcha in GPU_GOTCHAS]
    if gpu and not plan.nv and host_has_gpus:
        out.append(Rerun(gpu, "--nv", "passes with --nv", nv=True))
    for r in failing:
        if r.probe.startswith("binds.expected[") and r.gotcha == "bind-missing":
            path = r.probe[len("binds.expected["):-1]
            path = path.rsplit(":", 1)[0] if path.endswith((":rw", ":ro")) else path
            if os.path.exists(path):
                out.append(Rerun([r.probe], f"-B {path}", f"missing -B {path}", binds=(path,)))
        if r.probe.startswith("env.expected[") and r.gotcha in ("env-not-passed", "env-expectation"):
            name = r.probe[len("env.expected["):-1]
            if name in os.environ:
                out.append(Rerun([r.probe], f"--env {name}=<host value>",
                                 f"pass it with --env {name}=... or {plan.rt.env_prefix}{name}",
                                 env={name: os.environ[name]}))
    shadow = [r.probe for r in failing if r.gotcha == "user-site-shadow"]
    if shadow:
        out.append(Rerun(shadow, "--env PYTHONNOUSERSITE=1", "passes without user site-packages",
                         env={"PYTHONNOUSERSITE": "1"}))
    return out


def run_reruns(plan: Plan, reruns: List[Rerun], out_dir: str, timeout: float) -> List[dict]:
    done = []
    for i, rr in enumerate(reruns):
        rdir = os.path.join(out_dir, ".reruns", str(i))
        os.makedirs(rdir, exist_ok=True)
        os.chmod(rdir, 0o777)
        argv = plan.argv(results_dir=rdir, targets=tuple(harness.node_id(p) for p in rr.probes),
                         nv=rr.nv, binds=rr.binds, env=rr.env, single=True)
        res = execute(argv, os.path.join(rdir, "launch.log"), timeout)
        ranks, _, _ = collect(rdir, 1)
        outcomes = {c.probe: c.outcome for rank in ranks for c in rank.cases}
        ok = bool(outcomes) and all(outcomes.get(p) == "passed" for p in rr.probes)
        done.append({"probes": rr.probes, "change": rr.change, "command": run_argv_quoted(argv),
                     "outcome": "passed" if ok else "failed",
                     "finding": rr.finding if ok else f"still fails with {rr.change}",
                     "exit_code": res.returncode})
    return done


def apply_findings(results: List[CaseResult], reruns: List[dict]) -> None:
    for rr in reruns:
        for r in results:
            if r.probe in rr["probes"] and r.outcome in ("failed", "error"):
                r.message = f"{r.message} [re-run with {rr['change']}: {rr['finding']}]"


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
    if not remote:
        try:
            images.resolve(ns.image)  # cheap checks first: a bad path is bad input even without a runtime
        except images.ImageError as exc:
            raise UsageError(str(exc)) from None
    try:
        rt = runtimes.detect(ns.runtime)
    except runtimes.RuntimeNotFound:
        return None, site, host, ""  # type: ignore[return-value]
    cache = ns.cache_dir or os.path.join(user_cache(), "images")
    try:
        img = images.resolve(ns.image, rt, cache)
    except images.ImageError as exc:
        raise UsageError(str(exc)) from None
    launcher = ns.launcher or ("none" if ns.ranks == 1 else "auto")
    if launcher == "auto":
        launcher = launchers.detect(site_launcher=site.launcher)
    if launcher == "none" and ns.ranks > 1:
        raise UsageError(f"--ranks {ns.ranks} needs a launcher and none was found (give --launcher)")
    hostfile = ns.hostfile or (os.environ.get("PBS_NODEFILE") if launcher in ("pals", "hydra", "openmpi") else None)
    if hostfile and not os.path.isfile(hostfile):
        raise UsageError(f"--hostfile {hostfile}: no such file")
    req = launchers.LaunchRequest(ranks=ns.ranks, ppn=ns.ppn, hostfile=hostfile,
                                  depth=int(site.launcher_args[1]) if launcher == "pals" and "--depth" in site.launcher_args else None,
                                  cpu_bind="depth" if launcher == "pals" and "--cpu-bind" in site.launcher_args else None)
    gpus = site.gpus_per_node or (ns.ppn or 0)
    out = os.path.abspath(ns.out or default_out(ns.image))
    plan = Plan(rt=rt, image=img, python=ns.python, spec_binds=binds, spec_env=env, nv=ns.nv, cleanenv=ns.cleanenv,
                exp=exp, harness_dir=os.path.join(out, ".harness"), results_dir=os.path.join(out, "ranks"),
                ranks=ns.ranks, ppn=ns.ppn, launcher=launcher, launch_req=req,
                gpus_per_node=gpus if (ns.gpu_bind == "auto" and ns.nv and ns.ranks > 1) else 0,
                gpu_order=site.gpu_order)
    return plan, site, host, out


def launch_and_collect(plan: Plan, out: str, timeout: float):
    """Stage the harness, launch once, read every rank's file: (launch, ranks, lost, unreadable)."""
    for d in (out, plan.results_dir):
        os.makedirs(d, exist_ok=True)
    os.chmod(plan.results_dir, 0o777)  # ranks may run as another user (a site's service account)
    harness.stage(plan.harness_dir)
    res = execute(plan.argv(), os.path.join(out, "launch.log"), timeout)
    ranks, lost, unreadable = collect(plan.results_dir, plan.ranks)
    return res, ranks, lost, unreadable


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


PLACEMENT_KEYS = ("rank", "hostname", "local_rank", "cuda_visible_devices", "gpu_uuids", "cpu_affinity")


def placement_map(ranks: List[junit.RankResult]) -> List[dict]:
    """rank -> host -> local rank -> CUDA_VISIBLE_DEVICES -> GPU UUIDs -> CPU affinity, from each rank's context."""
    rows = [{k: r.context.get(k, "") for k in PLACEMENT_KEYS} for r in ranks]
    return sorted(rows, key=lambda row: int(row["rank"]) if str(row["rank"]).isdigit() else 0)


def placement_table(rows: List[dict]) -> str:
    from tabulate import tabulate
    return "placement:\n" + tabulate([[row[k] for k in PLACEMENT_KEYS] for row in rows],
                                      headers=["rank", "host", "local", "CUDA_VISIBLE_DEVICES", "GPU UUIDs", "CPUs"])


def tail(text: str, n: int = 3) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def merged_junit(ranks: List[junit.RankResult], out: str) -> str:
    """All ranks' suites in one JUnit file (what GitLab and Jenkins read)."""
    import junitparser
    xml = junitparser.JUnitXml("contprobe")
    for r in ranks:
        for suite in junitparser.JUnitXml.fromfile(r.path):
            suite.name = f"{suite.name}.r{r.rank}@{r.host}"
            xml.add_testsuite(suite)
    path = os.path.join(out, "merged-junit.xml")
    xml.write(path)
    return path


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
