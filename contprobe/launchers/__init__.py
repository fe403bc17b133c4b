"""Parallel launchers, registered by name: one small module each (pals, hydra, openmpi, srun).

A launcher owns its argument list, how it is found, how it recognises its own `mpiexec` (a conda
or module MPI that shadows the system one must not be handed another launcher's flags), the PMI
family its ranks speak, and its row of rank variables (contprobe.inimage.rankvars, read inside
images too). Adding one is a module here, `register()` at its end, a rankvars row and its tests.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Type


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
    extra: tuple = ()                                     # site profile's own launcher arguments
    env: Dict[str, str] = field(default_factory=dict)    # names exported to every rank by the launcher


@dataclass(frozen=True)
class Launcher:
    executable: str
    name = ""
    executables = ()            # candidates on PATH, first found wins
    banner = re.compile(r"$^")  # what `EXE --version` prints for this launcher
    pmi = "any"                 # the PMI family its ranks speak: mpich | openmpi | any

    def argv(self, r: LaunchRequest) -> List[str]:
        raise NotImplementedError

    @classmethod
    def find(cls) -> Optional[str]:
        return next(filter(None, map(shutil.which, cls.executables)), None)

    @classmethod
    def recognises(cls, version_text: str) -> bool:
        return bool(cls.banner.search(version_text))


REGISTRY: Dict[str, Type[Launcher]] = {}


def register(cls: Type[Launcher]) -> Type[Launcher]:
    REGISTRY[cls.name] = cls
    return cls


def names() -> List[str]:
    return sorted(REGISTRY)


@functools.lru_cache(maxsize=None)
def version_text(executable: str) -> str:
    try:
        return subprocess.run([executable, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def kind_of(executable: str) -> Optional[str]:
    """Which registered launcher an executable really is, from its --version banner."""
    text = version_text(executable)
    for name in DETECT_ORDER:
        if name in REGISTRY and REGISTRY[name].recognises(text):
            return name
    return None


def get(name: str) -> Launcher:
    """The launcher backend with its executable, checked to be its own kind.

    A mismatch is the `launcher-mismatch` gotcha: a Polaris profile asks for PALS, but the
    `mpiexec` on PATH is MPICH's Hydra from a conda or module MPI; PALS flags would be refused
    ("unrecognized argument depth") and every rank reported lost.
    """
    cls = REGISTRY.get(name)
    if cls is None:
        raise LauncherError(f"unknown launcher {name!r} (known: {', '.join(names())})")
    exe = cls.find()
    if not exe:
        raise LauncherError(f"launcher {name}: none of {', '.join(cls.executables)} on PATH")
    actual = kind_of(exe)
    if actual != name:
        raise MismatchError(name, exe, actual)
    return cls(exe)


class MismatchError(LauncherError):
    def __init__(self, wanted: str, exe: str, actual: Optional[str]) -> None:
        self.wanted, self.exe, self.actual = wanted, exe, actual
        super().__init__(f"launcher {wanted} wanted, but {exe} is {actual or 'an unknown launcher'} "
                         f"(`{os.path.basename(exe)} --version`): another MPI shadows the system's on PATH")


DETECT_ORDER = ("srun", "hydra", "openmpi", "pals")


def detect(env: Optional[Mapping[str, str]] = None, site_launcher: str = "auto") -> str:
    """Launcher for this allocation: site profile, then the scheduler, then the mpiexec banner."""
    env = os.environ if env is None else env
    if site_launcher and site_launcher != "auto":
        return site_launcher
    if env.get("SLURM_JOB_ID") and shutil.which("srun"):
        return "srun"
    for exe in ("mpiexec", "mpiexec.mpich", "mpirun"):
        path = shutil.which(exe)
        kind = kind_of(path) if path else None
        if kind:
            return kind
    return "none"


def hosts_from_nodefile(path: str) -> List[str]:
    """Unique hosts of a PBS_NODEFILE / hostfile, in order."""
    with open(path) as fh:
        lines = [line.split("#", 1)[0].strip() for line in fh]
    # "host", "host:slots" or "host slots=N": the first word before any colon (a line without one is no host)
    names = (s.split(":")[0].split() for s in lines if s)
    return list(dict.fromkeys(words[0] for words in names if words))


from contprobe.launchers import hydra, openmpi, pals, srun  # noqa: E402,F401  (registers them)
