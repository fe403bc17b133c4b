"""PBS Pro (Polaris): PBS_JOBID and PBS_NODEFILE (one line per host, repeated per chunk)."""
from __future__ import annotations

import os
from typing import List, Mapping, Optional

from contprobe.schedulers import Allocation, Scheduler, register


@register
class Pbs(Scheduler):
    name = "pbs"

    def allocation(self, env: Mapping[str, str]) -> Optional[Allocation]:
        nodefile = env.get("PBS_NODEFILE")
        if not env.get("PBS_JOBID") or not nodefile or not os.path.isfile(nodefile):
            return None
        from contprobe.launchers import hosts_from_nodefile
        return Allocation(self.name, env["PBS_JOBID"], hosts_from_nodefile(nodefile), nodefile,
                          _seconds(env.get("PBS_WALLTIME")))

    def submit_argv(self, script: str, nodes: int, walltime: str, extra: tuple = ()) -> List[str]:
        return ["qsub", "-l", f"select={nodes}", "-l", f"walltime={walltime}", *extra, script]


def _seconds(text: Optional[str]) -> Optional[float]:
    try:
        return float(text) if text else None
    except ValueError:
        return None
