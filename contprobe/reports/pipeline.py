"""The one results pipeline: collect -> merge -> render, for every command that shows results.

`doctor`, `run`, `validate`, `build-check`, `nightly` and `report` all end here, so the same results
directory always gives the same verdict, rows, gotchas, lost ranks and exit code.
"""
from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, TextIO, Tuple, Union

from contprobe import safeio, textsafe
from contprobe.inimage.redact import output_redactor, redact_output
from contprobe.model import Problem, Report
from contprobe.site import Site
from contprobe.suite import UsageError

OUT_FILES = {"html": "index.html", "json": "report.json", "markdown": "report.md", "junit": "junit.xml"}


@dataclass
class Outputs:
    """Where the documents go: a path, '-' for stdout, or None. The table is always printed."""
    json: Optional[str] = None
    markdown: Optional[str] = None
    html: Optional[str] = None
    junit: Optional[str] = None
    out_dir: Optional[str] = None

    def resolved(self) -> dict:
        outs = {k: getattr(self, k) for k in OUT_FILES}
        if self.out_dir:
            for k, name in OUT_FILES.items():
                outs[k] = outs[k] or os.path.join(self.out_dir, name)
        return outs


def check_outputs(outputs: Outputs) -> None:
    """Every output path is usable before anything starts: one line and exit 2 otherwise."""
    outs = outputs.resolved()
    to_stdout = [k for k, v in outs.items() if v == "-"]
    if len(to_stdout) > 1:
        raise UsageError(f"only one output can go to stdout, not {' and '.join('--' + k for k in to_stdout)}")
    for k, path in outs.items():
        if not path or path == "-":
            continue
        if os.path.isdir(path):
            raise UsageError(f"--{k} {path}: is a directory")
        parent = os.path.dirname(os.path.abspath(path))
        probe = parent
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise UsageError(f"--{k} {path}: {probe} is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
            raise UsageError(f"--{k} {path}: not writable")
    if outputs.out_dir and os.path.exists(outputs.out_dir) and not os.path.isdir(outputs.out_dir):
        raise UsageError(f"--out {outputs.out_dir}: not a directory")


def build(paths: Sequence[str], site: Site, expect_ranks: Optional[int] = None, baseline_path: Optional[str] = None,
          history: Optional[str] = None, workers: Optional[int] = None) -> Tuple[Report, List[str]]:
    """collect -> merge (-> compare with earlier nights). Returns the report and history warnings."""
    from contprobe.reports import baseline, collect, merge
    previous = None
    if baseline_path:
        doc, why = baseline.load_doc(baseline_path)
        if doc is None:
            raise UsageError(f"--baseline {why}")
        previous = (baseline_path, doc)
    # Hundreds of thousands of small acyclic records: the cyclic collector would only rescan them.
    gc.disable()
    try:
        inputs = collect.collect(paths, workers=workers)
        report = merge.merge(inputs, expect_ranks=expect_ranks, refs=site.perf, site=site.name)
        warnings: List[str] = []
        if previous is not None or history:
            hist, warnings = baseline.load_history(history) if history else ([], [])
            baseline.compare(report, previous, hist)
    finally:
        # The report's millions of objects live until exit: frozen, rendering's collections skip them.
        gc.freeze()
        gc.enable()
    if not report.rows and not report.problems:
        report.problems.append(Problem(", ".join(paths), "no rank results found"))
    return report, warnings


def render(report: Report, site: Site, outputs: Outputs, title: str = "contprobe report",
           warnings: Sequence[str] = ()) -> None:
    """The terminal table (stderr when a document goes to stdout) and every requested document."""
    from contprobe.reports import html, junit_out, summary
    outs = outputs.resolved()
    if outputs.out_dir:
        os.makedirs(outputs.out_dir, exist_ok=True)
    human: TextIO = sys.stderr if "-" in outs.values() else sys.stdout
    human.write(textsafe.terminal(redact_output(summary.terminal(report, site))))
    human.flush()
    for w in warnings:
        sys.stderr.write(f"contprobe: warning: --history {w}\n")
    for p in report.problems:
        sys.stderr.write(textsafe.one_line(f"contprobe: incomplete: {p.path}: {p.message}") + "\n")
    if outs["json"]:
        write(outs["json"], summary.json_parts(report, site))
    if outs["markdown"]:
        write(outs["markdown"], summary.markdown(report, site, title))
    if outs["html"]:
        write(outs["html"], html.page(report, site, title))
    if outs["junit"]:
        write(outs["junit"], junit_out.document(report, site))


def write(path: str, text: Union[str, Iterable[str]]) -> None:
    """The output boundary: one redaction for every format, and no link followed where it goes.

    A document too big to redact in one piece (the JSON of 100,000 ranks) comes as consecutive
    pieces, each redacted on its own as it is written.
    """
    redact = output_redactor()
    pieces = [text] if isinstance(text, str) else text
    if path == "-":
        for piece in pieces:
            sys.stdout.write(redact(piece))
        sys.stdout.flush()
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with safeio.open_output(path) as fh:
        for piece in pieces:
            fh.write(redact(piece))


def show(results_dir: str, site: Site, outputs: Outputs, title: str, strict: bool = False) -> int:
    """What run, doctor, validate and build-check do once their results directory is written."""
    report, warnings = build([results_dir], site)
    render(report, site, outputs, title, warnings)
    return report.exit_code(strict)


@dataclass
class ReportRequest:
    paths: List[str]
    site: Site
    outputs: Outputs = field(default_factory=Outputs)
    expect_ranks: Optional[int] = None
    baseline: Optional[str] = None
    history: Optional[str] = None
    workers: Optional[int] = None
    title: str = "contprobe report"
    strict: bool = False


def report(req: ReportRequest) -> int:
    rep, warnings = build(req.paths, req.site, req.expect_ranks, req.baseline, req.history, req.workers)
    render(rep, req.site, req.outputs, req.title, warnings)
    return rep.exit_code(req.strict)
