"""Markers and expectation values of the probe suite, parsed once so doctor, run and pytest agree.

Standard library only: the CLI imports this without paying for pytest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

MARKERS = {
    "gpu": "NVIDIA GPUs through nvidia-smi",
    "torch": "PyTorch and its CUDA view",
    "nvcc": "the CUDA compiler",
    "mpi": "mpi4py, MPI library and launcher agreement",
    "horovod": "horovod init and allreduce",
    "binds": "bind-mounted paths",
    "env": "environment leaks and expectations",
    "allreduce": "collective correctness and bandwidth (slow-ish)",
}

DEFAULT_ALLREDUCE_SIZES = "8,1024,65536,1048576,67108864"  # 8 B to 64 MiB


@dataclass(frozen=True)
class BindExpectation:
    path: str
    writable: bool


@dataclass(frozen=True)
class EnvExpectation:
    name: str
    value: Optional[str]


def parse_gpus(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"--expect-gpus takes a whole number >= 0, not {text!r}") from None
    if n < 0:
        raise ValueError(f"--expect-gpus takes a whole number >= 0, not {text!r}")
    return n


def parse_bind(text: str) -> BindExpectation:
    path, _, mode = text.partition(":")
    if not path.startswith("/"):
        raise ValueError(f"--expect-bind needs an absolute path, not {text!r}")
    if mode not in ("", "ro", "rw"):
        raise ValueError(f"--expect-bind {text!r}: mode must be 'ro' or 'rw', not {mode!r}")
    return BindExpectation(path.rstrip("/") or "/", mode == "rw")


def valid_name(name: str) -> bool:
    """A shell variable name: a letter or _, then letters, digits and _."""
    return bool(name) and (name[0].isalpha() or name[0] == "_") and all(c.isalnum() or c == "_" for c in name)


def parse_env(text: str) -> EnvExpectation:
    name, eq, value = text.partition("=")
    if not valid_name(name):
        raise ValueError(f"--expect-env needs NAME or NAME=VALUE with a valid variable name, not {text!r}")
    return EnvExpectation(name, value if eq else None)


def parse_sizes(text: str) -> List[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--allreduce-sizes takes comma-separated byte counts, not {text!r}") from None
    if not sizes or any(s < 4 for s in sizes):
        raise ValueError(f"--allreduce-sizes: each size must be >= 4 bytes, got {text!r}")
    return sizes


def argtype(parse: Callable[[str], object], keep_text: bool = False, drop: str = "") -> Callable[[str], object]:
    """An argparse type from a parser above: its ValueError becomes argparse's one-line error.

    keep_text returns the text itself (the CLI forwards it to pytest); drop removes a prefix
    argparse already prints ("argument --expect-ranks: ...").
    """
    import argparse

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace(drop, "") if drop else str(exc)) from None
        return text if keep_text else value
    convert.__name__ = parse.__name__.replace("parse_", "")
    return convert
