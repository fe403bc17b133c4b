"""One merged JUnit file for GitLab/Jenkins test views: a suite per image, a case per probe.

A case per probe (not per rank) keeps a 10,000-rank night readable in a CI test view; the failure
text says which ranks on which hosts, the gotcha and its fix. Per-rank detail is in the JSON.
The root is named `contprobe-report` so that a later `contprobe report DIR` skips it.
"""
from __future__ import annotations

from typing import Optional
from xml.etree import ElementTree as ET

import junitparser

from contprobe import textsafe
from contprobe.inimage.redact import redact_text
from contprobe.reports.collect import MERGED_NAME
from contprobe.model import Report
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
        lines = where(row) + ([row.text] if row.text else [])
        if row.outcome in ("failed", "error", "lost"):
            kind = junitparser.Failure if row.outcome == "failed" else junitparser.Error
            res = kind(redact_text(f"{summary}: [{row.gotcha}] {row.text}"), type_=row.gotcha or row.outcome)
            body = lines + ([f"fix: {fix_text(row.gotcha, site)}", f"see: contprobe gotchas {row.gotcha}"]
                            if row.gotcha else [])
            if row.evidence:
                body += ["", "evidence (first failing rank):", row.evidence]
            res.text = redact_text("\n".join(body))
            case.result = [res]
        elif row.outcome == "skipped":
            case.result = [junitparser.Skipped(redact_text(f"{summary}: {row.text}"))]
        elif row.outcome == "warning":  # JUnit has no warning: a passed case that says so in a property
            props = ET.SubElement(case._elem, "properties")
            for name, value in (("warning", row.gotcha or "warning"), ("message", row.text),
                                ("fix", fix_text(row.gotcha, site) if row.gotcha else "")):
                ET.SubElement(props, "property", name=name, value=redact_text(value))
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


def document(report: Report, site: Optional[Site] = None) -> str:
    """The merged JUnit as text, with every character XML cannot carry removed."""
    xml = merged(report, site)
    _scrub(xml._elem)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(xml._elem, encoding="unicode") + "\n"


def _scrub(root) -> None:
    for elem in root.iter():
        for k, v in list(elem.attrib.items()):
            elem.set(k, textsafe.xml(v))
        if elem.text:
            elem.text = textsafe.xml(elem.text)
        if elem.tail:
            elem.tail = textsafe.xml(elem.tail)
