"""The probe suite's markers and options: ONE table that feeds both pytest_addoption (the plugin,
inside images) and argparse (doctor, run, validate), so the two can never disagree.

Standard library only: the CLI imports this without paying for pytest.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Callable, List, Mapping, Optional, Tuple

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

    def as_arg(self) -> str:
        return self.path + (":rw" if self.writable else "")


@dataclass(frozen=True)
class EnvExpectation:
    name: str
    value: Optional[str]

    def wanted(self, environ: Mapping[str, str]) -> Optional[str]:
        """The expected value: given on the command line, or (from contprobe, which keeps values out of
        argv where `ps` shows them) in the variable EXPECTED_VALUE_PREFIX + NAME."""
        return self.value if self.value is not None else environ.get(EXPECTED_VALUE_PREFIX + self.name)

    def as_arg(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value}"


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


EXPECTED_VALUE_PREFIX = "CONTPROBE_EXPECTED_VALUE_"


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


def parse_seconds(text: str) -> float:
    """A duration: finite and > 0 (nan, inf, 0 and negatives would disable or break a timeout)."""
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"expected seconds (a number > 0), not {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"expected seconds (a finite number > 0), not {text!r}")
    return v


@dataclass(frozen=True)
class Option:
    flags: Tuple[str, ...]
    kwargs: dict
    cli: bool = True        # also offered by doctor, run and validate (not only by pytest)


OPTIONS: Tuple[Option, ...] = (
    Option(("--expect-gpus",), dict(type=argtype(parse_gpus), default=None, metavar="N",
                                    help="GPUs this process must see; a mismatch fails (default: skip without GPUs)")),
    Option(("--expect-mig",), dict(choices=["enabled", "disabled"], default=None,
                                   help="MIG mode every MIG-capable GPU must be in (site profile [gpus] mig)")),
    Option(("--expect-ranks",), dict(type=argtype(parse_gpus, drop="--expect-gpus "), default=None, metavar="N",
                                     help="MPI world size the launch must give")),
    Option(("--expect-bind",), dict(type=argtype(parse_bind), action="append", default=[], metavar="PATH[:rw]",
                                    help="path that must be visible (and writable with :rw)")),
    Option(("--expect-env",), dict(type=argtype(parse_env), action="append", default=[], metavar="NAME[=VALUE]",
                                   help="variable that must be set (to VALUE)")),
    Option(("--expect-proxy",), dict(action="store_true", default=False,
                                     help="proxy variables must be set (HTTP_PROXY/HTTPS_PROXY, both cases)")),
    Option(("--allreduce-sizes",), dict(type=argtype(parse_sizes), default=None, metavar="B,B,...",
                                        help=f"allreduce message sizes in bytes (default {DEFAULT_ALLREDUCE_SIZES})")),
    Option(("--probe-timeout",), dict(type=argtype(parse_seconds), default=300.0, metavar="S",
                                      help="seconds one probe may take before it is failed (hard exit after 2x)")),
    Option(("--results-dir",), dict(default=None, metavar="DIR",
                                    help="write JUnit to DIR/junit-r<rank>-<host>.xml (one file per rank)"), cli=False),
    Option(("--container-nv",), dict(choices=["yes", "no"], default=None,
                                     help="set by contprobe run: whether the container was started with --nv"),
           cli=False),
)


def add_options(add: Callable[..., object], cli: bool) -> None:
    """Register the table with argparse's add_argument (cli=True) or pytest's addoption (cli=False)."""
    for o in OPTIONS:
        if o.cli or not cli:
            add(*o.flags, **o.kwargs)
