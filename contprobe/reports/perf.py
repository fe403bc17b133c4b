"""Performance references: a figure below reference x (1 - tolerance) fails as perf-regression.

References live in the site profile (`[perf."probe id"] metric = [reference, tolerance]`) so a
machine's expectations are data; results carry figures as JUnit properties `metric.<name>`.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from contprobe import catalog

GOTCHA = "perf-regression"


@dataclass
class PerfCheck:
    metric: str
    reference: float
    tolerance: float
    worst: float                # lowest value over ranks (higher is better for every reference)
    median: float
    ranks: int                  # ranks that reported the metric
    below: List[Tuple[int, str, float]] = field(default_factory=list)   # (rank, host, value)

    @property
    def floor(self) -> float:
        return self.reference * (1.0 - self.tolerance)

    @property
    def ratio(self) -> float:
        return self.worst / self.reference if self.reference else 0.0

    @property
    def ok(self) -> bool:
        return not self.below

    def as_dict(self) -> dict:
        return {"metric": self.metric, "value": self.worst, "median": self.median,
                "reference": self.reference, "tolerance": self.tolerance, "ratio": round(self.ratio, 3),
                "ok": self.ok, "ranks": self.ranks,
                "below": [{"rank": r, "host": h, "value": v} for r, h, v in self.below]}


def regression_message(metric: str, value: float, reference: float, tolerance: float) -> str:
    # "below reference" is the catalog's symptom text for perf-regression.
    return (f"{metric} {value:.4g} below reference {reference:.4g} - {tolerance:.0%} "
            f"(ratio {value / reference if reference else 0:.2f})")


def apply(case: tuple, refs: Dict[str, Tuple[float, float]]) -> tuple:
    """A passed case (collect.Case) whose figure is under its floor becomes a perf-regression failure."""
    probe, outcome, duration, _msg, _gotcha, _fix, metrics, evidence = case
    if outcome != "passed" or not metrics:
        return case
    for metric, (reference, tolerance) in refs.items():
        value = metrics.get(metric)
        if value is not None and value < reference * (1.0 - tolerance):
            return (probe, "failed", duration, regression_message(metric, value, reference, tolerance),
                    GOTCHA, catalog.get(GOTCHA).fix_line, metrics, evidence)
    return case


def summarize(entries, refs: Dict[str, Tuple[float, float]]) -> List[PerfCheck]:
    """Value, reference and ratio per metric of one probe, over the ranks (merge.Entry) that measured it."""
    out: List[PerfCheck] = []
    for metric, (reference, tolerance) in refs.items():
        vals = [(ref[0], ref[1], c[6][metric]) for ref, c in entries if c[6] and metric in c[6]]
        if not vals:
            continue
        floor = reference * (1.0 - tolerance)
        out.append(PerfCheck(metric, reference, tolerance, min(v for _, _, v in vals),
                             statistics.median(v for _, _, v in vals), len(vals),
                             [x for x in vals if x[2] < floor]))
    return out
