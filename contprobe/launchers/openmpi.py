"""Open MPI's `mpirun`/`mpiexec` (ORTE/PRRTE)."""
from __future__ import annotations

import re
from typing import List

from contprobe.launchers import LaunchRequest, Launcher, register


@register
class OpenMPI(Launcher):
    name = "openmpi"
    executables = ("mpirun.openmpi", "mpirun", "mpiexec")
    banner = re.compile(r"Open MPI|OpenRTE|open-mpi|prterun", re.I)
    pmi = "openmpi"

    def argv(self, r: LaunchRequest) -> List[str]:
        argv = [self.executable, "-n", str(r.ranks)]
        if r.ppn:
            argv += ["--map-by", f"ppr:{r.ppn}:node"]
        if r.hostfile:
            argv += ["--hostfile", r.hostfile]
        elif r.hosts:
            argv += ["--host", ",".join(f"{h}:{r.ppn or r.ranks}" for h in r.hosts)]
        if r.cpu_bind:
            argv += ["--bind-to", r.cpu_bind]
        for k in r.env:
            argv += ["-x", k]
        return argv + list(r.extra)
