"""The operator's expectations and probe selection, checked and turned into the suite's arguments."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from contprobe.inimage.options import EXPECTED_VALUE_PREFIX, MARKERS, BindExpectation, EnvExpectation

PROBES_DIR = Path(__file__).resolve().parent / "inimage" / "probes"
MARKEXPR_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UsageError(ValueError):
    """Bad input: the CLI prints it as one line and exits 2."""


def check_markexpr(expr: str) -> None:
    """Every word of a -m expression must be a known marker (pytest alone would select nothing)."""
    check_expression("-m", expr)
    for word in MARKEXPR_WORDS.findall(expr):
        if word not in ("and", "or", "not") and word not in MARKERS:
            raise UsageError(f"-m {expr!r}: unknown marker {word!r} (known: {', '.join(sorted(MARKERS))})")


_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


def check_expression(flag: str, expr: str) -> None:
    """pytest's -k/-m grammar (expr := term {and|or term}; term := not term | ( expr ) | word), checked
    here so a typo is a one-line usage error instead of pytest's internal error inside the image."""
    tokens = [m.group(1) for m in _TOKEN.finditer(expr)]
    pos = 0

    def refuse(why: str) -> None:
        raise UsageError(f"{flag} {expr!r}: {why}")

    def term() -> None:
        nonlocal pos
        if pos >= len(tokens):
            refuse("unexpected end of expression")
        t = tokens[pos]
        if t in (")", "and", "or"):
            refuse(f"unexpected {t!r}")
        pos += 1
        if t == "not":
            term()
        elif t == "(":
            parse()
            if pos >= len(tokens) or tokens[pos] != ")":
                refuse("missing ')'")
            pos += 1

    def parse() -> None:
        nonlocal pos
        term()
        while pos < len(tokens) and tokens[pos] in ("and", "or"):
            pos += 1
            term()

    if not tokens:
        refuse("empty expression")
    parse()
    if pos != len(tokens):
        refuse(f"unexpected {tokens[pos]!r}")


@dataclass
class Expectations:
    """The operator's expectations, typed by the one option table (contprobe.inimage.options)."""
    gpus: Optional[int] = None
    mig: Optional[str] = None
    ranks: Optional[int] = None
    binds: List[BindExpectation] = field(default_factory=list)
    envs: List[EnvExpectation] = field(default_factory=list)
    proxy: bool = False
    allreduce_sizes: Optional[List[int]] = None
    keyword: Optional[str] = None
    markexpr: Optional[str] = None
    probe_timeout: float = 300.0

    @classmethod
    def from_namespace(cls, ns) -> "Expectations":
        if ns.markexpr:
            check_markexpr(ns.markexpr)
        if ns.keyword:
            check_expression("-k", ns.keyword)
        return cls(gpus=ns.expect_gpus, mig=ns.expect_mig, ranks=ns.expect_ranks, binds=list(ns.expect_bind),
                   envs=list(ns.expect_env), proxy=ns.expect_proxy, allreduce_sizes=ns.allreduce_sizes,
                   keyword=ns.keyword, markexpr=ns.markexpr, probe_timeout=ns.probe_timeout)

    def pytest_args(self) -> List[str]:
        args: List[str] = []
        if self.gpus is not None:
            args += ["--expect-gpus", str(self.gpus)]
        if self.mig:
            args += ["--expect-mig", self.mig]
        if self.ranks is not None:
            args += ["--expect-ranks", str(self.ranks)]
        for b in dict.fromkeys(self.binds):
            args += ["--expect-bind", b.as_arg()]
        for e in dict.fromkeys(self.envs):
            args += ["--expect-env", e.name]      # the value travels in the environment: env_values()
        if self.proxy:
            args.append("--expect-proxy")
        if self.allreduce_sizes:
            args += ["--allreduce-sizes", ",".join(str(n) for n in self.allreduce_sizes)]
        if self.keyword:
            args += ["-k", self.keyword]
        if self.markexpr:
            args += ["-m", self.markexpr]
        args += ["--probe-timeout", f"{self.probe_timeout:g}"]
        return args

    def env_values(self) -> Dict[str, str]:
        """Expected values, for the probes' environment: on a command line any user could read them."""
        return {f"{EXPECTED_VALUE_PREFIX}{e.name}": e.value for e in self.envs if e.value is not None}


def run_argv_quoted(argv: Sequence[str], env_names: Optional[Mapping[str, str]] = None) -> str:
    """The exact command as a shell line, with the variables the launch adds to its environment
    in front (NAME=VALUE command ...); secret-named values are masked at the output boundary."""
    import shlex
    head = [f"{k}={shlex.quote(v)}" for k, v in (env_names or {}).items()]
    return " ".join(head + [shlex.quote(a) for a in argv])
