"""Diagnosis by re-run: a failure is confirmed by a cheap second launch that changes one thing."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from contprobe import harness
from contprobe.launch import Plan, execute
from contprobe.ranks import collect
from contprobe.reports.junit import CaseResult
from contprobe.suite import run_argv_quoted

GPU_GOTCHAS = ("nv-flag-missing",)


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
