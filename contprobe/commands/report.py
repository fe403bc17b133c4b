"""`contprobe report PATH...`: merge the results of many ranks, nodes, images and nights.

Exit status: 0 all passed; 1 a probe failed or a rank was lost; 3 results incomplete (some input
unusable; everything readable is still reported); 2 bad usage.
"""
from __future__ import annotations

import argparse
import os

from contprobe.commands import args as cargs
from contprobe.reports import pipeline
from contprobe.site import load_or_detect
from contprobe.suite import UsageError

NAME, HELP = "report", "merge per-rank results into one report (table, Markdown, HTML, JSON, JUnit)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="results directories or rank files (searched recursively)")
    p.add_argument("--expect-ranks", type=cargs.positive_int, metavar="N",
                   help="ranks each launch must have (default: its launch record, else what the ranks report)")
    p.add_argument("--site", metavar="NAME", help="site profile for performance references and fix notes")
    p.add_argument("--baseline", metavar="PREVIOUS.json", help="an earlier report's JSON to compare with")
    p.add_argument("--history", metavar="DIR", help="directory of earlier report JSONs (flaky, since when)")
    p.add_argument("--out", metavar="DIR", help="write index.html, report.json, report.md and junit.xml into DIR")
    cargs.add_outputs(p)
    p.add_argument("--workers", type=cargs.workers, metavar="N", help="processes that read files (default: idle CPUs)")
    p.add_argument("--title", default="contprobe report")
    p.add_argument("--strict", action="store_true", help="warnings fail too")


def main(ns: argparse.Namespace) -> int:
    if ns.baseline and not os.path.isfile(ns.baseline):
        raise UsageError(f"--baseline {ns.baseline}: no such file")
    if ns.history and not os.path.isdir(ns.history):
        raise UsageError(f"--history {ns.history}: no such directory")
    outs = cargs.outputs(ns, out_dir=ns.out)
    return pipeline.report(pipeline.ReportRequest(paths=ns.paths, site=load_or_detect(ns.site), outputs=outs,
                                                  expect_ranks=ns.expect_ranks, baseline=ns.baseline,
                                                  history=ns.history, workers=ns.workers, title=ns.title,
                                                  strict=ns.strict))
