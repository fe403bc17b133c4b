"""MPICH's Hydra `mpiexec` (mpiexec.hydra, mpiexec.mpich)."""
from __future__ import annotations

import re
from typing import List

from contprobe.launchers import LaunchRequest, Launcher, register


@register
class Hydra(Launcher):
    name = "hydra"
    executables = ("mpiexec.hydra", "mpiexec.mpich", "mpiexec")
    banner = re.compile(r"HYDRA")
    pmi = "mpich"

    def argv(self, r: LaunchRequest) -> List[str]:
        argv = [self.executable, "-n", str(r.ranks)]
        if r.ppn:
            argv += ["-ppn", str(r.ppn)]
        if r.hostfile:
            argv += ["-f", r.hostfile]
        elif r.hosts:
            argv += ["-hosts", ",".join(r.hosts)]
        if r.cpu_bind:
            argv += ["-bind-to", r.cpu_bind]
        if r.env:
            # -genvlist passes names; the values stay in the environment, out of `ps`.
            argv += ["-genvlist", ",".join(r.env)]
        return argv + list(r.extra)
