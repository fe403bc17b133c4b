"""Diagnosis by re-run: a failure is confirmed by a cheap second launch that changes one thing.

Re-runs are planned only from the operator's own expectations (--expect-bind, --expect-env) and
from the catalog's `rerun` field; a probe id the image reports never chooses a host path or a
host variable. Secret-named variables are never passed, and values travel in the runtime's
environment, never on its command line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from contprobe import harness
from contprobe.inimage import catalog
from contprobe.inimage.redact import is_secret_name
from contprobe.launch import Plan, execute
from contprobe.model import Case, Rerun
from contprobe.reports.collect import RANK_FILE, read_rank_file
from contprobe.suite import run_argv_quoted


@dataclass
class Hypothesis:
    probes: List[str]
    change: str
    finding: str
    nv: Optional[bool] = None
    binds: Tuple[str, ...] = ()
    env: Dict[str, str] = field(default_factory=dict)


def plan_reruns(cases: Sequence[Case], plan: Plan, host_has_gpus: bool,
                host_env: Optional[Dict[str, str]] = None) -> List[Hypothesis]:
    """One cheap re-run per hypothesis, each changing exactly one thing."""
    host_env = dict(os.environ) if host_env is None else host_env
    failing = {c.probe: c for c in cases if c.outcome in ("failed", "error")}

    def confirms(probe: str, kind: str) -> bool:
        c = failing.get(probe)
        return c is not None and catalog.get(c.gotcha).rerun == kind

    out: List[Hypothesis] = []
    gpu = [p for p in failing if confirms(p, "gpus")]
    if gpu and not plan.nv and host_has_gpus:
        out.append(Hypothesis(gpu, plan.rt.gpu_flag, f"passes with {plan.rt.gpu_flag}", nv=True))
    for b in dict.fromkeys(plan.exp.binds):
        probe = f"binds.expected[{b.as_arg()}]"
        if confirms(probe, "bind") and os.path.exists(b.path):
            bind = b.path if not b.writable else f"{b.path}:{b.path}:rw"
            out.append(Hypothesis([probe], f"-B {b.path}", f"missing -B {b.path}", binds=(bind,)))
    for e in dict.fromkeys(plan.exp.envs):
        probe = f"env.expected[{e.name}]"
        if confirms(probe, "env") and e.name in host_env and not is_secret_name(e.name):
            out.append(Hypothesis([probe], f"--env {e.name}=<host value>",
                                  f"pass it with --env {e.name}=... or {plan.rt.env_hint(e.name)}",
                                  env={e.name: host_env[e.name]}))
    shadow = [p for p in failing if confirms(p, "nousersite")]
    if shadow:
        out.append(Hypothesis(shadow, "--env PYTHONNOUSERSITE=1", "passes without user site-packages",
                              env={"PYTHONNOUSERSITE": "1"}))
    return out


def run_reruns(plan: Plan, todo: List[Hypothesis], out_dir: str, timeout: float) -> List[Rerun]:
    done: List[Rerun] = []
    for i, h in enumerate(todo):
        rdir = os.path.join(out_dir, ".reruns", str(i))
        ranks = os.path.join(rdir, "ranks")
        os.makedirs(ranks, mode=0o700)
        argv, env = plan.argv(results_dir=ranks, targets=tuple(harness.node_id(p) for p in h.probes),
                              nv=h.nv, binds=h.binds, env=h.env, single=True)
        res = execute(argv, os.path.join(rdir, "launch.log"), timeout, env=env, results_dir=ranks, expected=1,
                      grace_s=plan.grace_s)
        outcomes: Dict[str, str] = {}
        # only rank files, as the launch itself reads them: anything else there was written by the image
        for name in sorted(n for n in os.listdir(ranks) if RANK_FILE.match(n)):
            _, kind, rank = read_rank_file(os.path.join(ranks, name), explicit=False)
            if kind == "ok":
                outcomes.update({c.probe: c.outcome for c in rank.cases})
        ok = bool(outcomes) and all(outcomes.get(p) == "passed" for p in h.probes)
        done.append(Rerun(h.probes, h.change, h.finding if ok else f"still fails with {h.change}",
                          "passed" if ok else "failed", run_argv_quoted(argv, env_names=env), res.returncode))
        if res.interrupted:
            break
    return done
