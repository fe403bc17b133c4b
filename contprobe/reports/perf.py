"""Performance references: a figure below reference x (1 - tolerance) fails as perf-regression.

References live in the site profile (`[perf."probe id"] metric = [reference, tolerance]`) so a
machine's expectations are data; results carry figures as JUnit properties `metric.<name>`.
"""
from __future__ import annotations

import statistics
from typing import Dict, List, Tuple

from contprobe.inimage import catalog
from contprobe.model import Case, PerfCheck

GOTCHA = "perf-regression"


def apply(case: Case, refs: Dict[str, Tuple[float, float]]) -> Case:
    """A passed case whose figure is under its floor becomes a perf-regression failure."""
    if case.outcome != "passed" or not case.metrics:
        return case
    for metric, (reference, tolerance) in refs.items():
        value = case.metrics.get(metric)
        if value is not None and value < reference * (1.0 - tolerance):
            # "below reference" is the catalog's symptom text for perf-regression.
            message = (f"{metric} {value:.4g} below reference {reference:.4g} - {tolerance:.0%} "
                       f"(ratio {value / reference if reference else 0:.2f})")
            return case._replace(outcome="failed", message=message, gotcha=GOTCHA, fix=catalog.get(GOTCHA).fix_line)
    return case


def summarize(row, refs: Dict[str, Tuple[float, float]]) -> List[PerfCheck]:
    """Value, reference and ratio per metric of one probe (a model.Row), over the ranks that measured it."""
    out: List[PerfCheck] = []
    for metric, (reference, tolerance) in refs.items():
        vals = [(ref.rank, ref.host, c.metrics[metric]) for ref, c in zip(row.refs, row.cases)
                if c.metrics and metric in c.metrics]
        if not vals:
            continue
        floor = reference * (1.0 - tolerance)
        out.append(PerfCheck(metric, reference, tolerance, min(v for _, _, v in vals),
                             statistics.median(v for _, _, v in vals), len(vals),
                             [x for x in vals if x[2] < floor]))
    return out
