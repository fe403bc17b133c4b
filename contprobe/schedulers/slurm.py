"""Slurm (Perlmutter): SLURM_JOB_ID and the compressed SLURM_JOB_NODELIST (n[01-04],login1)."""
from __future__ import annotations

import re
import subprocess
from typing import List, Mapping, Optional

from contprobe.schedulers import Allocation, Scheduler, register


@register
class Slurm(Scheduler):
    name = "slurm"

    def allocation(self, env: Mapping[str, str]) -> Optional[Allocation]:
        job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not job or not nodelist:
            return None
        return Allocation(self.name, job, expand_nodelist(nodelist), None, walltime_left(job),
                          tasks_per_node(env.get("SLURM_TASKS_PER_NODE", "")))

    def submit_argv(self, script: str, nodes: int, walltime: str, extra: tuple = ()) -> List[str]:
        return ["sbatch", f"--nodes={nodes}", f"--time={walltime}", *extra, script]


_GROUP = re.compile(r"([^,\[]+)(?:\[([^\]]+)\])?")


def expand_nodelist(text: str) -> List[str]:
    """`nid[001-003,007],login1` -> [nid001, nid002, nid003, nid007, login1] (Slurm's hostlist syntax,
    one bracket group per name, as `scontrol show hostnames` prints it)."""
    hosts: List[str] = []
    pos = 0
    while pos < len(text):
        m = _GROUP.match(text, pos)
        if not m:
            break
        prefix, ranges = m.group(1), m.group(2)
        if ranges is None:
            hosts.append(prefix)
        else:
            for part in ranges.split(","):
                lo, _, hi = part.partition("-")
                if hi and lo.isdigit() and hi.isdigit():
                    hosts += [f"{prefix}{i:0{len(lo)}d}" for i in range(int(lo), int(hi) + 1)]
                else:
                    hosts.append(prefix + lo)
        pos = m.end()
        if pos < len(text) and text[pos] == ",":
            pos += 1
    return list(dict.fromkeys(hosts))


def tasks_per_node(text: str) -> Optional[int]:
    """SLURM_TASKS_PER_NODE ("2(x4)", "2,2", "3(x2),1") -> the count when every node has the same."""
    counts = set()
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x\d+\))?", part.strip())
        if not m:
            return None
        counts.add(int(m.group(1)))
    return counts.pop() if len(counts) == 1 else None


def walltime_left(job: str) -> Optional[float]:
    try:   # no squeue on PATH is an OSError too
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%L"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", out)
    if not m:
        return None
    d, h, mi, s = (int(x or 0) for x in m.groups())
    return float(((d * 24 + h) * 60 + mi) * 60 + s)
