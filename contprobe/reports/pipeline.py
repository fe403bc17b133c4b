"""The one results pipeline: collect -> merge -> render, for every command that shows results.

`doctor`, `run`, `validate`, `build-check`, `nightly` and `report` all end here, so the same results
directory always gives the same verdict, rows, gotchas, lost ranks and exit code.
"""
from __future__ import annotations

import errno
import gc
import itertools
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, TextIO, Tuple, Union

from contprobe import safeio, textsafe
from contprobe.inimage.redact import output_redactor, redact_obj, redact_output
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
        if probe == parent:
            _try_open(k, path)
    if outputs.out_dir and os.path.exists(outputs.out_dir) and not os.path.isdir(outputs.out_dir):
        raise UsageError(f"--out {outputs.out_dir}: not a directory")


def _try_open(kind: str, path: str) -> None:
    """Open the output as it will be opened, now, so a refusal (a read-only or special file system, a
    link, a FIFO planted there) is one line before anything runs; a file created here is removed."""
    existed = os.path.lexists(path)
    if existed and not os.path.islink(path) and not stat.S_ISREG(os.lstat(path).st_mode):
        raise UsageError(f"--{kind} {path}: not a regular file")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | safeio.NOFOLLOW | safeio.NONBLOCK, 0o644)
    except OSError as exc:
        why = "a symbolic link (not followed)" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise UsageError(f"--{kind} {path}: {why}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"--{kind} {path}: not a regular file")
    finally:
        os.close(fd)
        if not existed:
            os.unlink(path)


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
        sys.stderr.write(redact_output(textsafe.one_line(f"contprobe: warning: --history {w}")) + "\n")
    for p in report.problems:
        # stderr is an output too: a problem's text can quote what an image wrote
        sys.stderr.write(redact_output(textsafe.one_line(f"contprobe: incomplete: {p.path}: {p.message}")) + "\n")
    if outs["json"]:
        write(outs["json"], summary.json_parts(report, site), "json")
    if outs["markdown"]:
        write(outs["markdown"], summary.markdown(report, site, title), "markdown")
    if outs["html"]:
        write(outs["html"], html.page(report, site, title), "html")
    if outs["junit"]:
        write(outs["junit"], junit_out.document(report, site), "junit")


MARKUP_MASK = "&lt;redacted&gt;"   # what a secret becomes inside XML and HTML


def redact_document(text: str, kind: str) -> str:
    """The one redaction, done so that it cannot break the document: in XML and HTML the mask is
    escaped; a JSON document that text-level masking would break (a value ending in an escape,
    an image's `\nuser:pw@host:port`) is redacted as an object instead."""
    if kind in ("html", "junit"):
        return redact_output(text, mask=MARKUP_MASK)
    out = redact_output(text)
    if kind == "json" and out != text:
        try:
            json.loads(out)
        except ValueError:
            out = textsafe.json_dumps(redact_obj(json.loads(text)), indent=2) + "\n"
    return out


def write(path: str, text: Union[str, Iterable[str]], kind: str = "text") -> None:
    """The output boundary: one redaction for every format, and no link followed where it goes.

    A document too big to hold twice (the JSON of 100,000 ranks) comes as consecutive pieces, each
    redacted on its own as it is written; json_parts ends every piece between two entries, so an
    untrusted string is always redacted whole.
    """
    if not isinstance(text, str):
        parts = iter(text)
        first, second = next(parts, ""), next(parts, None)
        if second is None:      # one piece after all: the whole-document redaction applies
            text = first
        else:
            redact = output_redactor()
            pieces: Iterable[str] = (redact(p) for p in itertools.chain((first, second), parts))
    if isinstance(text, str):
        pieces = [redact_document(text, kind)]
    if path == "-":
        sys.stdout.writelines(pieces)
        sys.stdout.flush()
        return
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with safeio.open_output(path) as fh:
            fh.writelines(pieces)
    except OSError as exc:   # checked before the run, but a disk can fill or a path change since
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


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


def show(results_dir: str, site: Site, outputs: Outputs, title: str, strict: bool = False) -> int:
    """What run, doctor, validate and build-check do once their results directory is written."""
    return report(ReportRequest([results_dir], site, outputs, title=title, strict=strict))
