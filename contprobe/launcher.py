"""Parallel launchers: each turns (ranks, ranks per node, hosts, binding) into an argument list.

PALS (Polaris), MPICH Hydra, Open MPI, Slurm, and none. PALS rejects Open MPI's flags
(--npernode, --bind-to, --map-by), so each launcher emits only its own.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional


class LauncherError(ValueError):
    pass


@dataclass(frozen=True)
class LaunchRequest:
    ranks: int
    ppn: Optional[int] = None
    hosts: tuple = ()
    hostfile: Optional[str] = None
    depth: Optional[int] = None
    cpu_bind: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)   # exported to every rank by the launcher


def _pals(exe: str, r: LaunchRequest) -> List[str]:
    argv = [exe, "-n", str(r.ranks)]
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
    for k, v in r.env.items():
        argv += ["--env", f"{k}={v}"]
    return argv


def _hydra(exe: str, r: LaunchRequest) -> List[str]:
    argv = [exe, "-n", str(r.ranks)]
    if r.ppn:
        argv += ["-ppn", str(r.ppn)]
    if r.hostfile:
        argv += ["-f", r.hostfile]
    elif r.hosts:
        argv += ["-hosts", ",".join(r.hosts)]
    if r.cpu_bind:
        argv += ["-bind-to", r.cpu_bind]
    for k, v in r.env.items():
        argv += ["-genv", k, v]
    return argv


def _openmpi(exe: str, r: LaunchRequest) -> List[str]:
    argv = [exe, "-n", str(r.ranks)]
    if r.ppn:
        argv += ["--map-by", f"ppr:{r.ppn}:node"]
    if r.hostfile:
        argv += ["--hostfile", r.hostfile]
    elif r.hosts:
        argv += ["--host", ",".join(f"{h}:{r.ppn or r.ranks}" for h in r.hosts)]
    if r.cpu_bind:
        argv += ["--bind-to", r.cpu_bind]
    for k, v in r.env.items():
        argv += ["-x", f"{k}={v}"]
    return argv


def _srun(exe: str, r: LaunchRequest) -> List[str]:
    argv = [exe, "-n", str(r.ranks)]
    if r.ppn:
        argv += [f"--ntasks-per-node={r.ppn}"]
    if r.hosts:
        argv += [f"--nodelist={','.join(r.hosts)}"]
    if r.cpu_bind:
        argv += [f"--cpu-bind={r.cpu_bind}"]
    if r.env:
        argv += ["--export=ALL," + ",".join(f"{k}={v}" for k, v in r.env.items())]
    return argv


def _none(exe: str, r: LaunchRequest) -> List[str]:
    if r.ranks != 1:
        raise LauncherError(f"--launcher none runs one rank, not {r.ranks}")
    return []


@dataclass(frozen=True)
class Launcher:
    name: str
    executables: tuple          # candidates, first found wins
    emit: Callable[[str, LaunchRequest], List[str]]

    def find(self) -> Optional[str]:
        for exe in self.executables:
            path = shutil.which(exe)
            if path:
                return path
        return None

    def argv(self, req: LaunchRequest, executable: Optional[str] = None) -> List[str]:
        if self.name == "none":
            return _none("", req)
        exe = executable or self.find()
        if not exe:
            raise LauncherError(f"launcher {self.name}: none of {', '.join(self.executables)} on PATH")
        return self.emit(exe, req)


LAUNCHERS: Dict[str, Launcher] = {
    "pals": Launcher("pals", ("mpiexec",), _pals),
    "hydra": Launcher("hydra", ("mpiexec.hydra", "mpiexec.mpich", "mpiexec"), _hydra),
    "openmpi": Launcher("openmpi", ("mpirun.openmpi", "mpirun", "mpiexec"), _openmpi),
    "srun": Launcher("srun", ("srun",), _srun),
    "none": Launcher("none", (), _none),
}


def banner_flavour(text: str) -> Optional[str]:
    """Launcher family from `mpiexec --version` output."""
    if re.search(r"HYDRA", text):
        return "hydra"
    if re.search(r"Open MPI|OpenRTE|open-mpi", text, re.I):
        return "openmpi"
    if re.search(r"PALS|Cray|HPE", text):
        return "pals"
    return None


def detect(env: Optional[Mapping[str, str]] = None, site_launcher: str = "auto") -> str:
    """Launcher for this allocation: site profile, then scheduler variables, then the mpiexec banner."""
    env = os.environ if env is None else env
    if site_launcher and site_launcher != "auto":
        return site_launcher
    if env.get("SLURM_JOB_ID") and shutil.which("srun"):
        return "srun"
    for exe in ("mpiexec", "mpiexec.mpich", "mpirun"):
        path = shutil.which(exe)
        if not path:
            continue
        try:
            out = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        flavour = banner_flavour(out)
        if flavour:
            return flavour
    return "none"


def hosts_from_nodefile(path: str) -> List[str]:
    """Unique hosts of a PBS_NODEFILE / hostfile, in order."""
    seen: List[str] = []
    with open(path) as fh:
        for line in fh:
            h = line.split("#", 1)[0].strip().split(":")[0].split()[0] if line.strip() else ""
            if h and h not in seen:
                seen.append(h)
    return seen
