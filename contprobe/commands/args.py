"""Argument groups several commands share: expectations (from the one option table), outputs,
and what a container launch takes."""
from __future__ import annotations

import argparse
import os
from typing import Tuple

from contprobe import launchers, runtimes
from contprobe.inimage.options import add_options, argtype, parse_seconds, valid_name
from contprobe.reports.pipeline import Outputs, check_outputs
from contprobe.suite import UsageError


def add_expectations(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("expectations (forwarded to the probe suite)")
    add_options(g.add_argument, cli=True)
    g.add_argument("-k", dest="keyword", metavar="EXPR", help="select probes by keyword (pytest -k)")
    g.add_argument("-m", dest="markexpr", metavar="MARKEXPR", help="select probes by marker (pytest -m)")


def add_outputs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("outputs ('-' is stdout; the table then goes to stderr)")
    g.add_argument("--json", metavar="FILE", help="JSON contract")
    g.add_argument("--junit", metavar="FILE", help="JUnit XML")
    g.add_argument("--markdown", metavar="FILE", help="Markdown report")
    g.add_argument("--html", metavar="FILE", help="self-contained HTML page")


def outputs(ns: argparse.Namespace, out_dir: str = None) -> Outputs:
    o = Outputs(json=ns.json, markdown=ns.markdown, html=ns.html, junit=ns.junit, out_dir=out_dir)
    check_outputs(o)
    return o


seconds = argtype(parse_seconds)


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return n


def workers(text: str) -> int:
    n = positive_int(text)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n > cpus:
        raise argparse.ArgumentTypeError(f"{n} workers but only {cpus} CPUs")
    return n


def add_container_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="SIF file, sandbox directory, or docker:// / oras:// reference")
    p.add_argument("--runtime", default="auto", choices=["auto", *runtimes.names()])
    p.add_argument("--nv", action="store_true", help="pass the runtime's GPU flag (--nv)")
    p.add_argument("-B", "--bind", dest="binds", action="append", default=[], metavar="SRC[:DST[:OPTS]]")
    p.add_argument("--env", dest="envs", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--cleanenv", action="store_true", help="pass --cleanenv (off unless asked)")
    p.add_argument("--python", default="python3", help="the image's Python (default python3)")
    p.add_argument("--ranks", type=positive_int, default=None, metavar="N")
    p.add_argument("--ppn", type=positive_int, default=None, metavar="P", help="ranks per node")
    p.add_argument("--launcher", default=None, choices=["auto", "none", *launchers.names()])
    p.add_argument("--hostfile", default=None, help="hosts for the launcher (default: the allocation's)")
    p.add_argument("--gpu-bind", choices=["auto", "none"], default="auto",
                   help="auto: one GPU per local rank (site order) when --nv and ranks > 1")
    p.add_argument("--site", default=None, help="site profile (`contprobe sites`); default: detect")
    p.add_argument("--out", default=None, metavar="DIR", help="results directory, new or empty "
                                                              "(default ./contprobe-results/...)")
    p.add_argument("--force", action="store_true", help="replace what a non-empty --out holds")
    p.add_argument("--timeout", type=seconds, default=1800.0, metavar="S", help="whole launch timeout")
    p.add_argument("--grace", type=seconds, default=None, metavar="S",
                   help="end the launch this long after a rank died (default: the site's, 30 s)")
    p.add_argument("--no-rerun", action="store_true", help="do not confirm failures with re-runs")
    p.add_argument("--strict", action="store_true", help="warnings fail too (the publish gate)")
    p.add_argument("--cache-dir", default=None, help="where registry images are converted to SIF")


def parse_bind(text: str) -> str:
    src, _, rest = text.partition(":")
    if not src:
        raise UsageError(f"-B {text!r}: empty source path")
    if not os.path.isabs(src):
        raise UsageError(f"-B {text!r}: the source must be an absolute path")
    if not os.path.exists(src):
        raise UsageError(f"-B {text!r}: bind source {src} does not exist on this host")
    dst, _, opts = rest.partition(":")
    if dst and not dst.startswith("/"):
        raise UsageError(f"-B {text!r}: the destination must be an absolute path")
    for o in filter(None, opts.split(",")):
        if o not in ("ro", "rw"):
            raise UsageError(f"-B {text!r}: unknown bind option {o!r} (ro or rw)")
    return text


def parse_env_pair(text: str) -> Tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not valid_name(name):
        raise UsageError(f"--env {text!r}: expected NAME=VALUE")
    return name, value
