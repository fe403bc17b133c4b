"""One merged JUnit file for GitLab/Jenkins test views: a suite per image, a case per probe.

A case per probe (not per rank) keeps a 10,000-rank night readable in a CI test view; the failure
text says which ranks on which hosts, the gotcha and its fix. Per-rank detail is in the JSON.
The root is named `contprobe-report` so that a later `contprobe report DIR` skips it.
"""
from __future__ import annotations

from typing import Optional

import junitparser

from contprobe.redact import redact_text
from contprobe.reports.collect import MERGED_NAME
from contprobe.reports.merge import Report
from contprobe.reports.summary import fix_text, result_cell, where
from contprobe.site import Site


def merged(report: Report, site: Optional[Site] = None) -> junitparser.JUnitXml:
    xml = junitparser.JUnitXml(name=MERGED_NAME)
    suites = {}
    for row in report.rows:
        suite = suites.get((row.image, row.night))
        if suite is None:
            suite = suites[(row.image, row.night)] = junitparser.TestSuite(row.image)
            suite.add_property("image", row.image)
            suite.add_property("night", row.night)
            suite.add_property("site", report.site)
        case = junitparser.TestCase(row.probe, classname=row.image, time=round(row.duration_s, 3))
        summary = result_cell(row)
        lines = where(row) + ([row.message] if row.message else [])
        if row.outcome in ("failed", "error", "lost"):
            kind = junitparser.Failure if row.outcome == "failed" else junitparser.Error
            res = kind(redact_text(f"{summary}: [{row.gotcha}] {row.message}"), type_=row.gotcha or row.outcome)
            body = lines + ([f"fix: {fix_text(row.gotcha, site)}", f"see: contprobe gotchas {row.gotcha}"]
                            if row.gotcha else [])
            if row.evidence:
                body += ["", "evidence (first failing rank):", row.evidence]
            res.text = redact_text("\n".join(body))
            case.result = [res]
        elif row.outcome == "skipped":
            res = junitparser.Skipped(redact_text(f"{summary}: {row.message}"))
            case.result = [res]
        if row.perf or row.change:
            out = [f"{p.metric}: worst {p.worst:.4g}, median {p.median:.4g}, reference {p.reference:.4g}, "
                   f"ratio {p.ratio:.2f}" for p in row.perf]
            if row.change:
                out.append(f"change: {row.change}" + (f" since {row.since}" if row.since else ""))
            case.system_out = "\n".join(out)
        suite.add_testcase(case)
    for suite in suites.values():
        suite.update_statistics()
        xml.add_testsuite(suite)
    xml.update_statistics()
    return xml


def write(report: Report, path: str, site: Optional[Site] = None) -> None:
    merged(report, site).write(path, pretty=True)
