"""Read the JUnit files the probe suite writes back into plain records."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List

import junitparser

from contprobe import catalog

OUTCOMES = ("passed", "failed", "error", "skipped", "lost")


class JUnitError(ValueError):
    """A file that cannot be read as a contprobe JUnit result; the message names the file."""


@dataclass
class CaseResult:
    probe: str
    outcome: str
    duration_s: float
    message: str = ""
    gotcha: str = ""
    fix: str = ""
    metrics: Dict[str, float] = field(default_factory=dict)
    evidence: str = ""

    def as_dict(self) -> dict:
        return {"probe": self.probe, "outcome": self.outcome, "duration_s": round(self.duration_s, 3),
                "message": self.message, "gotcha": self.gotcha, "fix": self.fix,
                **({"metrics": self.metrics} if self.metrics else {})}


@dataclass
class RankResult:
    path: str
    context: Dict[str, str]
    cases: List[CaseResult]

    @property
    def rank(self) -> int:
        try:
            return int(self.context.get("rank", "0"))
        except ValueError:
            return 0

    @property
    def host(self) -> str:
        return self.context.get("hostname", "?")


def _outcome(case: junitparser.TestCase) -> tuple:
    """(outcome, message, evidence) from a testcase's result elements."""
    for res in case.result:
        kind = type(res).__name__.lower()
        text = (res.text or "").strip()
        if kind == "failure":
            return "failed", res.message or "", text
        if kind == "error":
            return "error", res.message or "", text
        if kind == "skipped":
            return "skipped", res.message or "", text
    return "passed", "", ""


def _props(element) -> Dict[str, str]:
    """<properties> of a testsuite or testcase (junitparser's TestCase lacks properties())."""
    out: Dict[str, str] = {}
    props = element.child(junitparser.Properties)
    for p in props if props is not None else ():
        out.setdefault(p.name, p.value)
    return out


def read(path: str) -> RankResult:
    """One JUnit file written by pytest with the contprobe plugin."""
    try:
        xml = junitparser.JUnitXml.fromfile(str(path))
    except ET.ParseError as exc:
        raise JUnitError(f"{path}: not well-formed XML ({exc}); was the rank killed while writing?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JUnitError(f"{path}: cannot be read ({exc})") from None
    except Exception as exc:  # junitparser raises JUnitXmlError and friends for non-JUnit roots
        raise JUnitError(f"{path}: not a JUnit file ({exc})") from None
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    if not suites or not all(isinstance(s, junitparser.TestSuite) for s in suites):
        raise JUnitError(f"{path}: not a JUnit file (no <testsuite>)")
    ctx: Dict[str, str] = {}
    cases: List[CaseResult] = []
    for suite in suites:
        ctx.update(_props(suite))
        for case in suite:
            if not isinstance(case, junitparser.TestCase):
                continue
            props = _props(case)
            outcome, res_message, evidence = _outcome(case)
            metrics = {}
            for k, v in props.items():
                if k.startswith("metric."):
                    try:
                        metrics[k[7:]] = float(v)
                    except ValueError:
                        pass
            gotcha = props.get("gotcha", "")
            if outcome in ("failed", "error") and not gotcha:
                # A failure outside the probes (a crashed fixture, a collection error) still gets a verdict.
                gotcha = catalog.match(f"{res_message}\n{evidence}")
            fix = props.get("fix") or (catalog.get(gotcha).fix_line if gotcha else "")
            probe = props.get("probe") or f"{case.classname}.{case.name}".strip(".")
            message = props.get("message") or (res_message.strip().splitlines() or [""])[0]
            cases.append(CaseResult(probe=probe, outcome=outcome, duration_s=float(case.time or 0.0),
                                    message=message,
                                    gotcha=gotcha, fix=fix, metrics=metrics, evidence=evidence))
    return RankResult(path=str(path), context=ctx, cases=cases)
