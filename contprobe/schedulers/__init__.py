"""Schedulers, registered by name: one small module each (pbs, slurm; `none` below).

A scheduler owns what an allocation is: whether we are inside one, its hosts (in order), its job
id, the walltime left, and how to submit a batch script. `validate` and `nightly` take ranks and
hosts from here, so a Slurm site is a profile, not a fork.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Type


class SchedulerError(ValueError):
    pass


@dataclass(frozen=True)
class Allocation:
    scheduler: str
    job_id: str
    hosts: List[str]
    hostfile: Optional[str] = None       # a file the launcher can read, when the scheduler has one
    walltime_left_s: Optional[float] = None
    ranks_per_node: Optional[int] = None  # tasks per node the allocation was made for, when uniform


class Scheduler:
    name = "none"

    def allocation(self, env: Mapping[str, str]) -> Optional[Allocation]:
        return None

    def submit_argv(self, script: str, nodes: int, walltime: str, extra: tuple = ()) -> List[str]:
        raise SchedulerError(f"scheduler {self.name} cannot submit jobs")


REGISTRY: Dict[str, Type[Scheduler]] = {"none": Scheduler}


def register(cls: Type[Scheduler]) -> Type[Scheduler]:
    REGISTRY[cls.name] = cls
    return cls


def names() -> List[str]:
    return sorted(REGISTRY)


def current(env: Optional[Mapping[str, str]] = None, preferred: str = "auto") -> Optional[Allocation]:
    """The allocation this process runs in, asking the preferred scheduler first, then the others."""
    env = os.environ if env is None else env
    order = ([preferred] if preferred in REGISTRY else []) + [n for n in names() if n != preferred]
    for name in order:
        alloc = REGISTRY[name]().allocation(env)
        if alloc is not None:
            return alloc
    return None


from contprobe.schedulers import pbs, slurm  # noqa: E402,F401  (registers them)
