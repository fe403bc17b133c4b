"""Run the probe suite in a child pytest and read back what it wrote."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from contprobe.expect import MARKERS

PROBES_DIR = Path(__file__).resolve().parent / "probes"
MARKEXPR_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UsageError(ValueError):
    """Bad input: the CLI prints it as one line and exits 2."""


def check_markexpr(expr: str) -> None:
    """Every word of a -m expression must be a known marker (pytest alone would select nothing)."""
    for word in MARKEXPR_WORDS.findall(expr):
        if word not in ("and", "or", "not") and word not in MARKERS:
            raise UsageError(f"-m {expr!r}: unknown marker {word!r} (known: {', '.join(sorted(MARKERS))})")


@dataclass
class Expectations:
    """Options forwarded to the probe suite; already validated by the plugin's parsers."""
    gpus: Optional[int] = None
    ranks: Optional[int] = None
    binds: List[str] = field(default_factory=list)
    envs: List[str] = field(default_factory=list)
    proxy: bool = False
    allreduce_sizes: Optional[str] = None
    keyword: Optional[str] = None
    markexpr: Optional[str] = None
    probe_timeout: float = 300.0

    def pytest_args(self) -> List[str]:
        args: List[str] = []
        if self.gpus is not None:
            args += ["--expect-gpus", str(self.gpus)]
        if self.ranks is not None:
            args += ["--expect-ranks", str(self.ranks)]
        for b in self.binds:
            args += ["--expect-bind", b]
        for e in self.envs:
            args += ["--expect-env", e]
        if self.proxy:
            args.append("--expect-proxy")
        if self.allreduce_sizes:
            args += ["--allreduce-sizes", self.allreduce_sizes]
        if self.keyword:
            args += ["-k", self.keyword]
        if self.markexpr:
            args += ["-m", self.markexpr]
        args += ["--probe-timeout", f"{self.probe_timeout:g}"]
        return args


def pytest_argv(probes_dir: str, junit: Optional[str], exp: Expectations,
                results_dir: Optional[str] = None, python: str = "python3") -> List[str]:
    argv = [python, "-m", "pytest", probes_dir, "-q", "-rN", "--color=no"]
    if junit:
        argv += ["--junitxml", junit]
    if results_dir:
        argv += ["--results-dir", results_dir]
    return argv + exp.pytest_args()


@dataclass
class LocalRun:
    junit: str
    returncode: int
    output: str
    argv: List[str]


def run_local(exp: Expectations, workdir: str, timeout: Optional[float] = None,
              extra_env: Optional[dict] = None) -> LocalRun:
    """The suite on this machine (doctor): a child pytest so a crashing probe cannot take us down."""
    junit = os.path.join(workdir, "junit.xml")
    argv = pytest_argv(str(PROBES_DIR), junit, exp, python=sys.executable)
    # The user's environment as it is: the leak probes must see what their jobs see.
    env = dict(os.environ, **(extra_env or {}))
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, env=env, cwd=workdir)
        return LocalRun(junit, p.returncode, p.stdout, argv)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return LocalRun(junit, 124, out + f"\n[contprobe] probe suite killed after {timeout} s", argv)


def new_workdir(prefix: str = "contprobe-") -> str:
    return tempfile.mkdtemp(prefix=prefix)


def run_argv_quoted(argv: Sequence[str]) -> str:
    import shlex
    return " ".join(shlex.quote(a) for a in argv)
