"""One launch of the probe suite: the plan that decides it, its argument list, its execution.

A hang ends in a report, not a stuck job: the launch runs in its own process group and is
ended whole at its timeout.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from contprobe import harness, image as images, launcher as launchers, runtime as runtimes
from contprobe.ranks import collect
from contprobe.suite import Expectations


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
        use_nv = self.nv if nv is None else nv
        pytest_args = ["-q", "-rN", "--color=no", "--capture=sys", "--results-dir", harness.RESULTS_MOUNT,
                       "--container-nv", "yes" if use_nv else "no"] + exp.pytest_args()
        spec = runtimes.ExecSpec(
            image=self.image.path,
            command=harness.bootstrap_command(self.python, pytest_args, list(targets),
                                              0 if single else self.gpus_per_node, self.gpu_order),
            nv=use_nv,
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


def launch_and_collect(plan: Plan, out: str, timeout: float):
    """Stage the harness, launch once, read every rank's file: (launch, ranks, lost, unreadable)."""
    for d in (out, plan.results_dir):
        os.makedirs(d, exist_ok=True)
    os.chmod(plan.results_dir, 0o777)  # ranks may run as another user (a site's service account)
    harness.stage(plan.harness_dir)
    res = execute(plan.argv(), os.path.join(out, "launch.log"), timeout)
    ranks, lost, unreadable = collect(plan.results_dir, plan.ranks)
    return res, ranks, lost, unreadable
