"""`contprobe report PATH...`: merge per-rank JUnit files of many ranks, nodes, images and nights.

Exit status: 0 all passed; 1 a probe failed or a rank was lost; 3 results incomplete (some input
unreadable, duplicated or empty; everything readable is still reported); 2 bad usage.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from typing import List, Optional

from contprobe.suite import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
OUT_FILES = {"html": "index.html", "json": "report.json", "markdown": "report.md", "junit": "junit.xml"}


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return n


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("report", help="merge per-rank JUnit files into one report (table, Markdown, HTML, JSON, JUnit)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="PATH", help="JUnit files or directories (searched recursively)")
    p.add_argument("--expect-ranks", type=_positive, metavar="N",
                   help="ranks each launch must have (default: launch.json, else the world size ranks report)")
    p.add_argument("--site", metavar="NAME", help="site profile for performance references and fix notes "
                                                 "(default: detected, else generic)")
    p.add_argument("--baseline", metavar="PREVIOUS.json", help="an earlier report's JSON to compare with")
    p.add_argument("--history", metavar="DIR", help="directory of earlier report JSONs (flaky, since when)")
    g = p.add_argument_group("outputs (the terminal table is always printed)")
    g.add_argument("--out", metavar="DIR", help="write index.html, report.json, report.md and junit.xml into DIR")
    g.add_argument("--json", metavar="FILE", help="JSON contract with per-rank detail ('-' for stdout)")
    g.add_argument("--markdown", metavar="FILE", help="Markdown ('-' for stdout)")
    g.add_argument("--html", metavar="FILE", help="self-contained HTML page")
    g.add_argument("--junit", metavar="FILE", help="one merged JUnit file for CI test views")
    p.add_argument("--workers", type=_positive, metavar="N", help="processes that read files (default: CPUs)")
    p.add_argument("--title", default="contprobe report")
    p.set_defaults(func=cmd_report)


def _write(path: Optional[str], text: str) -> None:
    from contprobe.cli import write_out
    write_out(path, text)


def cmd_report(ns: argparse.Namespace) -> int:
    from contprobe import site as sitemod
    from contprobe.reports import baseline, collect, html, junit_out, merge, summary

    for opt in ("baseline",):
        path = getattr(ns, opt)
        if path and not os.path.isfile(path):
            raise UsageError(f"--{opt} {path}: no such file")
    if ns.history and not os.path.isdir(ns.history):
        raise UsageError(f"--history {ns.history}: no such directory")
    try:
        site = sitemod.load(ns.site) if ns.site else sitemod.detect()
    except sitemod.SiteError as exc:
        raise UsageError(str(exc)) from None
    previous = None
    if ns.baseline:
        doc, why = baseline.load_doc(ns.baseline)
        if doc is None:
            raise UsageError(f"--baseline {why}")
        previous = (ns.baseline, doc)

    # Hundreds of thousands of small acyclic records: the cyclic collector would only rescan them.
    gc.disable()
    try:
        inputs = collect.collect(ns.paths, workers=ns.workers)
        report = merge.merge(inputs, expect_ranks=ns.expect_ranks, refs=site.perf, site=site.name)
        warnings: List[str] = []
        if previous is not None or ns.history:
            history, warnings = baseline.load_history(ns.history) if ns.history else ([], [])
            baseline.compare(report, previous, history)
        if not report.rows and not report.problems:
            report.problems.append(collect.Problem(", ".join(ns.paths), "no rank results found"))

        outs = {k: getattr(ns, k) for k in OUT_FILES}
        if ns.out:
            os.makedirs(ns.out, exist_ok=True)
            for k, name in OUT_FILES.items():
                outs[k] = outs[k] or os.path.join(ns.out, name)
        to_stdout = [k for k, v in outs.items() if v == "-"]
        if len(to_stdout) > 1:
            raise UsageError(f"only one output can go to stdout, not {' and '.join('--' + k for k in to_stdout)}")
        if outs["junit"] == "-" or outs["html"] == "-":
            raise UsageError("--junit and --html need a file name")
        # With a document on stdout the human table goes to stderr, so pipes get clean output.
        human = sys.stderr if to_stdout else sys.stdout
        human.write(summary.terminal(report, site))
        for w in warnings:
            sys.stderr.write(f"contprobe: warning: --history {w}\n")
        for p in report.problems:
            sys.stderr.write(f"contprobe: incomplete: {p.path}: {p.message}\n")
        if outs["json"]:
            _write(outs["json"], summary.to_json(summary.contract(report, site)))
        if outs["markdown"]:
            _write(outs["markdown"], summary.markdown(report, site, ns.title))
        if outs["html"]:
            _write(outs["html"], html.page(report, site, ns.title))
        if outs["junit"]:
            os.makedirs(os.path.dirname(os.path.abspath(outs["junit"])), exist_ok=True)
            junit_out.write(report, outs["junit"], site)
    finally:
        gc.enable()
    if report.incomplete:
        return EXIT_INCOMPLETE
    return EXIT_FAILED if report.verdict == "failed" else EXIT_OK
