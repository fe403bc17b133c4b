"""HPE Cray PALS `mpiexec` (Polaris): its own flags only (-n --ppn --depth --cpu-bind --hostfile);
it refuses Open MPI's --npernode, --bind-to and --map-by."""
from __future__ import annotations

import re
from typing import List

from contprobe.launchers import LaunchRequest, Launcher, register


@register
class Pals(Launcher):
    name = "pals"
    executables = ("mpiexec",)
    banner = re.compile(r"PALS|Cray|HPE")
    pmi = "mpich"

    def argv(self, r: LaunchRequest) -> List[str]:
        argv = [self.executable, "-n", str(r.ranks)]
        if r.ppn:
            argv += ["--ppn", str(r.ppn)]
        if r.depth:
            argv += ["--depth", str(r.depth)]
        if r.cpu_bind:
            argv += ["--cpu-bind", r.cpu_bind]
        if r.hostfile:
            argv += ["--hostfile", r.hostfile]
        elif r.hosts:
            argv += ["--hosts", ",".join(r.hosts)]
        for k in r.env:
            argv += ["--env", k]
        return argv + list(r.extra)
