"""Slurm's `srun` (Perlmutter and most Slurm machines), with PMI-2 for MPICH-family MPIs."""
from __future__ import annotations

import re
from typing import List

from contprobe.launchers import LaunchRequest, Launcher, register


@register
class Srun(Launcher):
    name = "srun"
    executables = ("srun",)
    # Upstream prints "slurm 22.05.8"; Debian/Ubuntu's slurm-wlm package prints "slurm-wlm 22.05.8".
    banner = re.compile(r"^slurm(-wlm)? \d", re.M)
    # pmi: the default, "any"

    def argv(self, r: LaunchRequest) -> List[str]:
        argv = [self.executable, "-n", str(r.ranks)]
        if r.ppn:
            argv += [f"--ntasks-per-node={r.ppn}"]
        if r.hosts:
            argv += [f"--nodelist={','.join(r.hosts)}", f"--nodes={len(r.hosts)}"]
        if r.cpu_bind:
            argv += [f"--cpu-bind={r.cpu_bind}"]
        if r.env:
            argv += ["--export=ALL"]   # the values are already in srun's own environment
        return argv + list(r.extra)
